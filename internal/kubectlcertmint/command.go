// Package kubectlcertmint is the kubectl plugin `kubectl certmint`: it
// reports issuers and requests (status), describes the certificates of a
// pod's volumes as the pod's node's driver holds them (inspect), asks
// issuers to re-issue early (renew), and approves or denies pending
// certmint requests (approve, deny).
//
// It works only through the API server, as the user running it, with the
// mechanisms the controller and the driver already have: an issuer's
// status.reissueBefore, the approval subresource of CertificateSigningRequests,
// and the driver's read-only GET /volumes reached through the API server's
// pod proxy. It reads no Secret and no key. Of the driver's and the
// controller's packages it uses only their contracts (request, apis, pki,
// the attribute names of attributes): the JSON of /volumes it decodes with
// types of its own.
package kubectlcertmint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"

	"github.com/certmint/certmint/pkg/request"
)

// Exit codes, for scripts.
const (
	// ExitOK: the command did what it was asked, and found nothing wrong.
	ExitOK = 0
	// ExitError: a usage error, or the API server or the driver refused or
	// failed a request; nothing, or not everything, was done.
	ExitError = 1
	// ExitUnhealthy: the command worked, and what it reports needs
	// attention: an issuer not Ready, a request denied, failed or stuck, a
	// Certificate not Ready, an Order invalid (status), or a volume the
	// driver does not hold, cannot renew or failed to renew (inspect).
	ExitUnhealthy = 2
)

// DefaultCertmintNamespace is where deploy/ installs the driver.
const DefaultCertmintNamespace = "certmint"

// fieldManager names the plugin in the managedFields of what it writes.
const fieldManager = "kubectl-certmint"

// Env is what the commands work with.
type Env struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	// ServerClock is the API server's clock: what reissueBefore is compared
	// with. Required by renew.
	ServerClock ServerClock
	// Clock is the local clock: for the ages shown, whether a certificate
	// has expired, and the time of a decision. Defaults to the real clock.
	Clock clock.PassiveClock
}

func (e *Env) clock() clock.PassiveClock {
	if e.Clock == nil {
		return clock.RealClock{}
	}
	return e.Clock
}

// NewEnv returns an Env for the API server of cfg.
func NewEnv(cfg *rest.Config) (*Env, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = fieldManager
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	serverClock, err := NewAPIServerClock(cfg)
	if err != nil {
		return nil, err
	}
	return &Env{Kube: kube, Dynamic: dyn, ServerClock: serverClock}, nil
}

// report is what a command found, printed as a table or as JSON or YAML.
type report interface {
	writeTable(t *textWriter)
	// healthy is false when something reported needs attention.
	healthy() bool
}

// options are the flags of every command; each command accepts only its
// own (command.flags) besides the common ones.
type options struct {
	kubeconfig        string
	overrides         clientcmd.ConfigOverrides
	output            string
	certmintNamespace string
	allNamespaces     bool
	wholeIssuer       bool
	reason            string
}

// command is one subcommand: its words, arguments and flags, and how it
// runs.
type command struct {
	words []string
	args  string
	// nargs is the number of arguments it takes; -1 for one or more.
	nargs int
	short string
	flags []string
	run   func(ctx context.Context, env *Env, o *options, args []string) (report, error)
}

var commands = []command{
	{
		words: []string{"status"}, nargs: 0,
		short: "Issuers with readiness and CA expiry; requests pending, denied or failed; Certificates not Ready; Orders not valid",
		flags: []string{"all-namespaces"},
		run: func(ctx context.Context, env *Env, o *options, _ []string) (report, error) {
			return asReport(Status(ctx, env, StatusOptions{Namespace: o.namespace(), AllNamespaces: o.allNamespaces}))
		},
	},
	{
		words: []string{"inspect", "pod"}, args: "NAME", nargs: 1,
		short: "The certificates of a pod's certmint volumes, as its node's driver holds them",
		flags: []string{"certmint-namespace"},
		run: func(ctx context.Context, env *Env, o *options, args []string) (report, error) {
			return asReport(Inspect(ctx, env, InspectOptions{Namespace: o.namespace(), Pod: args[0], CertmintNamespace: o.certmintNamespace}))
		},
	},
	{
		words: []string{"renew", "issuer"}, args: "NAME", nargs: 1,
		short: "Have every certificate of an Issuer of -n's namespace re-issued early",
		run: func(ctx context.Context, env *Env, o *options, args []string) (report, error) {
			ref := request.IssuerRef{Kind: request.KindIssuer, Namespace: o.namespace(), Name: args[0]}
			return asReport(RenewIssuer(ctx, env, RenewIssuerOptions{Issuer: ref}))
		},
	},
	{
		words: []string{"renew", "clusterissuer"}, args: "NAME", nargs: 1,
		short: "Have every certificate of a ClusterIssuer re-issued early",
		run: func(ctx context.Context, env *Env, _ *options, args []string) (report, error) {
			ref := request.IssuerRef{Kind: request.KindClusterIssuer, Name: args[0]}
			return asReport(RenewIssuer(ctx, env, RenewIssuerOptions{Issuer: ref}))
		},
	},
	{
		words: []string{"renew", "pod"}, args: "NAME", nargs: 1,
		short: "Have a pod's certificates re-issued early: only with --whole-issuer, through its issuers",
		flags: []string{"whole-issuer"},
		run: func(ctx context.Context, env *Env, o *options, args []string) (report, error) {
			return asReport(RenewPod(ctx, env, RenewPodOptions{Namespace: o.namespace(), Pod: args[0], WholeIssuer: o.wholeIssuer}))
		},
	},
	{
		words: []string{"approve"}, args: "CSR...", nargs: -1,
		short: "Approve pending certmint CertificateSigningRequests",
		flags: []string{"reason"},
		run: func(ctx context.Context, env *Env, o *options, args []string) (report, error) {
			return asReport(Decide(ctx, env, DecideOptions{Names: args, Approve: true, Reason: o.reason}))
		},
	},
	{
		words: []string{"deny"}, args: "CSR...", nargs: -1,
		short: "Deny pending certmint CertificateSigningRequests, with a reason",
		flags: []string{"reason"},
		run: func(ctx context.Context, env *Env, o *options, args []string) (report, error) {
			if strings.TrimSpace(o.reason) == "" {
				return nil, usageError{"deny needs --reason: the driver and the pod's events show it"}
			}
			return asReport(Decide(ctx, env, DecideOptions{Names: args, Approve: false, Reason: o.reason}))
		},
	},
}

// asReport returns r as a report, nil when r is: a nil *StatusReport in a
// report interface would not be nil.
func asReport[T any, R interface {
	*T
	report
}](r R, err error) (report, error) {
	if r == nil {
		return nil, err
	}
	return r, err
}

// namespace is the namespace of -n, else of the kubeconfig's context.
func (o *options) namespace() string {
	ns, _, err := o.clientConfig().Namespace()
	if err != nil || ns == "" {
		return "default"
	}
	return ns
}

func (o *options) clientConfig() clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &o.overrides)
}

// flagSet defines every flag of every command on o; run refuses those the
// chosen command does not take.
func flagSet(o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("kubectl certmint", pflag.ContinueOnError)
	fs.SetInterspersed(true)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "Path to the kubeconfig file to use")
	clientcmd.BindOverrideFlags(&o.overrides, fs, clientcmd.RecommendedConfigOverrideFlags(""))
	fs.StringVarP(&o.output, "output", "o", "table", "Output format: table, json or yaml")
	fs.StringVar(&o.certmintNamespace, "certmint-namespace", DefaultCertmintNamespace, "Namespace of the certmint driver's pods")
	fs.BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "Report Issuers, requests, Certificates and Orders of every namespace, not only -n's")
	fs.BoolVar(&o.wholeIssuer, "whole-issuer", false, "Re-issue every certificate of each of the pod's issuers, on every node: certmint has no per-pod re-issue")
	fs.StringVar(&o.reason, "reason", "", "Why: the message of the Approved or Denied condition (required by deny)")
	fs.BoolP("help", "h", false, "Show help")
	return fs
}

// commonFlags are the flags every command takes: the kubeconfig flags,
// -o and -h.
func commonFlags(fs *pflag.FlagSet) []string {
	own := map[string]bool{}
	for _, c := range commands {
		for _, f := range c.flags {
			own[f] = true
		}
	}
	var out []string
	fs.VisitAll(func(f *pflag.Flag) {
		if !own[f.Name] {
			out = append(out, f.Name)
		}
	})
	return out
}

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// invocation is a parsed command line.
type invocation struct {
	o    options
	fs   *pflag.FlagSet
	cmd  *command
	args []string
	help bool
}

// parse reads the command line; a nil cmd with help asks for the general
// help.
func parse(args []string) (*invocation, error) {
	inv := &invocation{}
	inv.fs = flagSet(&inv.o)
	if err := inv.fs.Parse(args); err != nil {
		return inv, err
	}
	inv.cmd, inv.args = lookup(inv.fs.Args())
	if inv.help, _ = inv.fs.GetBool("help"); inv.help {
		return inv, nil
	}
	if inv.cmd == nil {
		return inv, errors.New(unknownCommand(inv.fs.Args()))
	}
	if err := checkArgs(inv.fs, inv.cmd, inv.args); err != nil {
		return inv, err
	}
	if !slices.Contains([]string{"table", "json", "yaml"}, inv.o.output) {
		return inv, fmt.Errorf("-o %s: want table, json or yaml", inv.o.output)
	}
	return inv, nil
}

// Main runs the plugin with args (without the program's name) against the
// cluster its kubeconfig flags name, writing the report to stdout and
// errors to stderr, and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	inv, err := parse(args)
	switch {
	case err != nil:
		return usage(stderr, inv.cmd, err)
	case inv.help:
		if err := writeHelp(stdout, inv.fs, inv.cmd); err != nil {
			return ExitError
		}
		return ExitOK
	}
	cfg, err := inv.o.clientConfig().ClientConfig()
	if err != nil {
		return fail(stderr, err)
	}
	env, err := NewEnv(cfg)
	if err != nil {
		return fail(stderr, err)
	}
	return inv.run(ctx, env, stdout, stderr)
}

// Run is Main with the clients given: the kubeconfig flags in args choose
// only the namespace.
func Run(ctx context.Context, env *Env, args []string, stdout, stderr io.Writer) int {
	inv, err := parse(args)
	switch {
	case err != nil:
		return usage(stderr, inv.cmd, err)
	case inv.help:
		if err := writeHelp(stdout, inv.fs, inv.cmd); err != nil {
			return ExitError
		}
		return ExitOK
	}
	return inv.run(ctx, env, stdout, stderr)
}

func (inv *invocation) run(ctx context.Context, env *Env, stdout, stderr io.Writer) int {
	r, err := inv.cmd.run(ctx, env, &inv.o, inv.args)
	if uerr := (usageError{}); errors.As(err, &uerr) {
		return usage(stderr, inv.cmd, err)
	}
	if r != nil {
		if werr := writeReport(stdout, inv.o.output, r); werr != nil {
			return fail(stderr, fmt.Errorf("writing the output: %w", werr))
		}
	}
	switch {
	case err != nil:
		return fail(stderr, err)
	case !r.healthy():
		return ExitUnhealthy
	}
	return ExitOK
}

// lookup finds the command whose words start args, and returns it with the
// arguments after them.
func lookup(args []string) (*command, []string) {
	for i := range commands {
		c := &commands[i]
		if len(args) >= len(c.words) && slices.Equal(args[:len(c.words)], c.words) {
			return c, args[len(c.words):]
		}
	}
	return nil, nil
}

func unknownCommand(args []string) string {
	if len(args) == 0 {
		return "no command given"
	}
	var near []string
	for _, c := range commands {
		if c.words[0] == args[0] {
			near = append(near, strings.Join(c.words, " ")+" "+c.args)
		}
	}
	if len(near) > 0 {
		return fmt.Sprintf("unknown command %q; did you mean %s?", strings.Join(args, " "), strings.Join(near, " or "))
	}
	return fmt.Sprintf("unknown command %q", strings.Join(args, " "))
}

// checkArgs refuses flags cmd does not take and a wrong number of
// arguments.
func checkArgs(fs *pflag.FlagSet, cmd *command, args []string) error {
	allowed := append(commonFlags(fs), cmd.flags...)
	var refused []string
	fs.Visit(func(f *pflag.Flag) {
		if !slices.Contains(allowed, f.Name) {
			refused = append(refused, "--"+f.Name)
		}
	})
	if len(refused) > 0 {
		return fmt.Errorf("%s does not take %s", strings.Join(cmd.words, " "), strings.Join(refused, ", "))
	}
	switch {
	case cmd.nargs < 0 && len(args) == 0:
		return fmt.Errorf("%s needs at least one %s", strings.Join(cmd.words, " "), strings.TrimSuffix(cmd.args, "..."))
	case cmd.nargs == 0 && len(args) > 0:
		return fmt.Errorf("%s takes no arguments; got %q", strings.Join(cmd.words, " "), args)
	case cmd.nargs > 0 && len(args) != cmd.nargs:
		return fmt.Errorf("%s takes %s; got %q", strings.Join(cmd.words, " "), cmd.args, args)
	}
	return nil
}

// fail reports err and returns ExitError.
func fail(w io.Writer, err error) int {
	// Nothing is left to tell of an error writing the error.
	_, _ = fmt.Fprintf(w, "error: %v\n", err)
	return ExitError
}

func usage(w io.Writer, cmd *command, err error) int {
	name := "kubectl certmint"
	if cmd != nil {
		name += " " + strings.Join(cmd.words, " ")
	}
	// Nothing is left to tell of an error writing the error.
	_, _ = fmt.Fprintf(w, "error: %v\nSee '%s --help'.\n", err, name)
	return ExitError
}

// writeHelp describes cmd, or every command when cmd is nil.
func writeHelp(w io.Writer, fs *pflag.FlagSet, cmd *command) error {
	t := newTextWriter(w)
	if cmd == nil {
		t.printf("kubectl certmint: certmint's issuers, requests and volumes.\n\nCommands:\n")
		for _, c := range commands {
			t.row("  "+strings.TrimSpace(strings.Join(c.words, " ")+" "+c.args), c.short)
		}
		t.printf("\nExit codes: 0 done and all well; 1 a usage or API error; 2 done, and what it reports needs attention.\n" +
			"Use \"kubectl certmint COMMAND --help\" for a command's flags; every command takes the kubectl flags " +
			"(--kubeconfig, --context, -n, ...) and -o table|json|yaml.\n")
		return t.done()
	}
	t.printf("kubectl certmint %s\n  %s\n\nFlags:\n", strings.TrimSpace(strings.Join(cmd.words, " ")+" "+cmd.args), cmd.short)
	own := pflag.NewFlagSet("", pflag.ContinueOnError)
	for _, name := range append(slices.Clone(cmd.flags), "namespace", "output", "kubeconfig", "context") {
		own.AddFlag(fs.Lookup(name))
	}
	t.printf("%s  ...and the other kubectl connection flags (--server, --token, --as, ...).\n", own.FlagUsages())
	return t.done()
}
