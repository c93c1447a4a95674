// Command logkeycheck reports structured log calls whose keys are not
// constants from github.com/certmint/certmint/pkg/logkeys, so every log key is
// named in one place and logs can be queried by it. hack/lint.sh runs it on
// the whole tree; see Analyzer for the rules.
package main

import "golang.org/x/tools/go/analysis/singlechecker"

func main() { singlechecker.Main(Analyzer) }
