// Command hello is a small main package for the tests to build images of:
// it compiles in a second where certmint's binaries take a minute.
package main

import "fmt"

func main() {
	fmt.Println("hello")
}
