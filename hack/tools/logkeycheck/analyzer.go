package main

import (
	"go/ast"
	"go/types"
	"strings"

	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/analysis/passes/inspect"
	"golang.org/x/tools/go/ast/inspector"
	"golang.org/x/tools/go/types/typeutil"
)

const (
	logrPath    = "github.com/go-logr/logr"
	logkeysPath = "github.com/certmint/certmint/pkg/logkeys"
)

// kvMethods are the logr.Logger methods whose trailing variadic parameter
// holds key/value pairs. V(n) and WithName return a Logger, so V(n).Info and
// the like are matched as Info.
var kvMethods = map[string]bool{"Info": true, "Error": true, "WithValues": true}

// Analyzer reports, outside _test.go files, every call to a logr.Logger
// method that takes key/value pairs (Info, Error, WithValues) where
//   - a key is not a reference to a constant declared in package
//     github.com/certmint/certmint/pkg/logkeys (string literals and constants
//     of other packages are reported with their value, so they are easy to
//     move there), or
//   - the key/value arguments are odd in number (logr then logs the last key
//     with a "<no-value>" placeholder).
//
// A pair slice spread with "..." cannot be checked and is left alone.
var Analyzer = &analysis.Analyzer{
	Name:     "logkeycheck",
	Doc:      "report logr key/value calls whose keys are not constants from " + logkeysPath,
	Requires: []*analysis.Analyzer{inspect.Analyzer},
	Run:      run,
}

func run(pass *analysis.Pass) (any, error) {
	insp := pass.ResultOf[inspect.Analyzer].(*inspector.Inspector)
	insp.Preorder([]ast.Node{(*ast.CallExpr)(nil)}, func(n ast.Node) {
		call := n.(*ast.CallExpr)
		// Tests may log freely.
		if strings.HasSuffix(pass.Fset.File(call.Pos()).Name(), "_test.go") {
			return
		}
		fn, ok := typeutil.Callee(pass.TypesInfo, call).(*types.Func)
		if !ok || !isLoggerKVMethod(fn) {
			return
		}
		if call.Ellipsis.IsValid() {
			return
		}
		sig := fn.Signature()
		first := sig.Params().Len() - 1 // index of keysAndValues
		if len(call.Args) <= first {
			return
		}
		kvs := call.Args[first:]
		if len(kvs)%2 != 0 {
			pass.Reportf(call.Lparen, "odd number of key/value arguments (%d) in call to logr.Logger.%s", len(kvs), fn.Name())
		}
		for i := 0; i < len(kvs); i += 2 {
			checkKey(pass, kvs[i])
		}
	})
	return nil, nil
}

// isLoggerKVMethod tells whether fn is one of kvMethods with receiver
// logr.Logger, also when it is reached through an embedded field.
func isLoggerKVMethod(fn *types.Func) bool {
	if !kvMethods[fn.Name()] || fn.Pkg() == nil || fn.Pkg().Path() != logrPath {
		return false
	}
	sig := fn.Signature()
	recv := sig.Recv()
	if recv == nil || !sig.Variadic() {
		return false
	}
	t := recv.Type()
	if p, ok := t.(*types.Pointer); ok {
		t = p.Elem()
	}
	named, ok := t.(*types.Named)
	return ok && named.Obj().Name() == "Logger"
}

func checkKey(pass *analysis.Pass, key ast.Expr) {
	key = ast.Unparen(key)
	var id *ast.Ident
	switch k := key.(type) {
	case *ast.Ident:
		id = k
	case *ast.SelectorExpr:
		id = k.Sel
	}
	if id != nil {
		if c, ok := pass.TypesInfo.Uses[id].(*types.Const); ok && c.Pkg() != nil && c.Pkg().Path() == logkeysPath {
			return
		}
	}
	// Say what the key is, with its value when it has one, so the finding
	// can be fixed by adding that value to logkeys.
	var what string
	tv := pass.TypesInfo.Types[key]
	switch {
	case tv.Value != nil && isLit(key):
		what = "is a string literal"
	case tv.Value != nil && id != nil:
		what = "(= " + tv.Value.ExactString() + ") is a constant of package " + constPkg(pass, id)
	case tv.Value != nil:
		what = "(= " + tv.Value.ExactString() + ") is a constant expression"
	default:
		what = "is not a constant"
	}
	pass.Reportf(key.Pos(), "log key %s %s; use a constant from %s", types.ExprString(key), what, logkeysPath)
}

func isLit(e ast.Expr) bool {
	_, ok := e.(*ast.BasicLit)
	return ok
}

func constPkg(pass *analysis.Pass, id *ast.Ident) string {
	if obj := pass.TypesInfo.Uses[id]; obj != nil && obj.Pkg() != nil {
		return obj.Pkg().Path()
	}
	return "?"
}
