package kubectlcertmint

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

func TestTheCommandLineIsCheckedBeforeAnythingIsAsked(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "no command given"},
		{"an unknown command", []string{"delete", "x"}, `unknown command "delete x"`},
		{"a command without its second word", []string{"renew", "x"}, `unknown command "renew x"; did you mean renew issuer NAME or renew clusterissuer NAME or renew pod NAME?`},
		{"a missing argument", []string{"inspect", "pod"}, `inspect pod takes NAME; got []`},
		{"an argument too many", []string{"status", "now"}, `status takes no arguments; got ["now"]`},
		{"no request to approve", []string{"approve"}, "approve needs at least one CSR"},
		{"another command's flag", []string{"renew", "issuer", "ca", "--whole-issuer"}, "renew issuer does not take --whole-issuer"},
		{"an unknown flag", []string{"status", "--wide"}, "unknown flag: --wide"},
		{"an unknown output format", []string{"status", "-o", "wide"}, "-o wide: want table, json or yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakes(t, nil)
			code, out, errOut := f.run(t, tc.args...)
			if code != ExitError || out != "" || !strings.HasPrefix(errOut, "error: "+tc.want) || !strings.Contains(errOut, "--help") {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d and the error %q with a pointer to --help", code, out, errOut, ExitError, tc.want)
			}
			if len(f.kube.Actions())+len(f.dyn.Actions()) != 0 {
				t.Errorf("the API was asked: %v %v", f.kube.Actions(), f.dyn.Actions())
			}
		})
	}
}

func TestHelpListsTheCommandsAndEachCommandsFlags(t *testing.T) {
	f := newFakes(t, nil)
	code, out, _ := f.run(t, "--help")
	for _, want := range []string{"status", "inspect pod NAME", "renew issuer NAME", "renew clusterissuer NAME", "renew pod NAME", "approve CSR...", "deny CSR...", "Exit codes: 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q:\n%s", want, out)
		}
	}
	if code != ExitOK {
		t.Errorf("--help exits %d", code)
	}
	code, out, _ = f.run(t, "renew", "pod", "-h")
	if code != ExitOK || !strings.Contains(out, "--whole-issuer") || strings.Contains(out, "--reason") || !strings.Contains(out, "--namespace") {
		t.Errorf("renew pod -h exits %d:\n%s\nwant its own flags and the common ones", code, out)
	}
}

func TestFlagsMayComeBeforeTheCommand(t *testing.T) {
	f := newFakes(t, nil)
	code, out, errOut := f.run(t, "-n", "shop", "-o", "json", "status")
	if code != ExitOK || !strings.Contains(out, `"healthy": true`) {
		t.Errorf("exit %d, stdout %q, stderr %q; want a JSON status", code, out, errOut)
	}
}

func TestTheAPIServerClockIsReadFromItsDateHeader(t *testing.T) {
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		w.Header().Set("Date", "Wed, 02 Jan 2030 03:02:35 GMT")
		http.Error(w, "forbidden", http.StatusForbidden)
	}))
	defer srv.Close()
	// An API server behind a path prefix, as some proxies serve it.
	c, err := NewAPIServerClock(&rest.Config{Host: srv.URL + "/clusters/a"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Now(t.Context())
	if err != nil || !got.Equal(time.Date(2030, 1, 2, 3, 2, 35, 0, time.UTC)) || path != "/clusters/a/version" {
		t.Errorf("Now = %v, %v after GET %s; want the Date of the answer to GET /clusters/a/version, whatever its status", got, err, path)
	}
}
