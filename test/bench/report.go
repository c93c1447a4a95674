package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/certmint/certmint/test/stack"
)

// results are everything the harness measured; zero parts were skipped.
type results struct {
	machine machine

	serial, concurrent publishRun
	breakdown          breakdown // of the serial run
	driverRSS          struct{ idle, at100, atAll stack.Memory }
	volumes            int // published at atAll
	controllerRSS      stack.Memory

	// api is what the API server served during the concurrent run, for
	// issuances issuances.
	api       apiCounts
	issuances float64
	cleanup   cleanup
	// cpu is the CPU time per issuance of the driver, the controller,
	// kube-apiserver and etcd.
	cpu [4]time.Duration

	driverFlags  []string
	storm        *stormResult
	certificates *certificateResults
	vault        *vaultResults
	pods         *podStartup
	keys         []keyResult
}

// Reference figures: cert-manager's csi-driver with its CA issuer on the
// same kind of machine.
const (
	refP50    = 216 * time.Millisecond
	refP99    = 345 * time.Millisecond
	refRate   = 5.0  // publishes per second at concurrency 16
	refRateHi = 20.0 // with client limits lifted
	refRSSLow = 73e6 // bytes
)

func (r *results) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s\n\n", r.machine.summary())
	if len(r.driverFlags) > 0 {
		fmt.Fprintf(&b, "The driver ran with %s.\n\n", strings.Join(r.driverFlags, " "))
	}
	// The rows of the first table; the table is left out when they are.
	var rows strings.Builder
	row := rowsOf(&rows)

	if r.volumes > 0 {
		r.driverRows(row)
	}
	if p := r.pods; p != nil {
		row(fmt.Sprintf("pod create → Running with a certmint volume (N=%d): p50 / p90", len(p.certmint)),
			fmt.Sprintf("%s / %s", ms(quantile(p.certmint, 0.5)), ms(quantile(p.certmint, 0.9))), "", "")
		row(fmt.Sprintf("pod create → Running with a podCertificate projection of a certmint signer (N=%d): p50 / p90", len(p.projected)),
			fmt.Sprintf("%s / %s", ms(quantile(p.projected, 0.5)), ms(quantile(p.projected, 0.9))), "", "")
		row(fmt.Sprintf("pod create → Running with an emptyDir (N=%d): p50 / p90", len(p.emptyDir)),
			fmt.Sprintf("%s / %s", ms(quantile(p.emptyDir, 0.5)), ms(quantile(p.emptyDir, 0.9))), "", "")
		row("start-up overhead of a certmint volume: difference of p50s; p50 / p90 of paired differences",
			fmt.Sprintf("%s; %s / %s", ms(quantile(p.certmint, 0.5)-quantile(p.emptyDir, 0.5)), ms(quantile(p.diffs, 0.5)), ms(quantile(p.diffs, 0.9))),
			"≤ 150 ms at p50", "")
		row("start-up overhead of a podCertificate projection: difference of p50s; p50 / p90 of paired differences",
			fmt.Sprintf("%s; %s / %s", ms(quantile(p.projected, 0.5)-quantile(p.emptyDir, 0.5)), ms(quantile(p.projectedDiffs, 0.5)), ms(quantile(p.projectedDiffs, 0.9))),
			"", "")
	}

	for _, k := range r.keys {
		row("key generation, "+k.name, fmt.Sprintf("%s per key (%d runs)", ms(k.perOp), k.runs), "", "")
	}
	if rows.Len() > 0 {
		b.WriteString("| measure | result | goal | reference (cert-manager csi-driver) |\n|---|---|---|---|\n")
		b.WriteString(rows.String())
	}

	if c := r.certificates; c != nil {
		if rows.Len() > 0 {
			b.WriteString("\n")
		}
		b.WriteString("| Certificates → Secrets | result | goal | reference (cert-manager) |\n|---|---|---|---|\n")
		c.rows(rowsOf(&b), r.machine.cpus)
	}

	if v := r.vault; v != nil {
		b.WriteString("\n| Vault ClusterIssuer (AppRole; a Vault dev server on loopback, its audit log on) | result | CA ClusterIssuer, same run |\n|---|---|---|\n")
		v.rows(func(measure, result, ca string) { fmt.Fprintf(&b, "| %s | %s | %s |\n", measure, result, ca) }, r)
	}
	return b.String()
}

// rowsOf returns a function that writes table rows to b.
func rowsOf(b *strings.Builder) func(measure, result, goal, reference string) {
	return func(measure, result, goal, reference string) {
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", measure, result, goal, reference)
	}
}

func mean(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(len(d))
}

func distribution(sorted []time.Duration) string {
	return fmt.Sprintf("%s / %s / %s", ms(quantile(sorted, 0.5)), ms(quantile(sorted, 0.9)), ms(quantile(sorted, 0.99)))
}

func ms(d time.Duration) string {
	switch {
	case d < 0:
		return "−" + ms(-d)
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// rss shows the resident set and what it is made of.
func rss(m stack.Memory) string {
	return fmt.Sprintf("%s (anonymous %s, file %s)", mib(m.Total()), mib(m.Anon), mib(m.File))
}

// ratio says how many times smaller ours is than the reference.
func ratio(reference, ours float64) string {
	if ours <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f× less", reference/ours)
}

// driverRows are the figures of the control-plane runs.
func (r *results) driverRows(row func(measure, result, goal, reference string)) {
	s, c := r.serial, r.concurrent
	row(fmt.Sprintf("NodePublishVolume → files ready, concurrency 1 (N=%d): p50 / p90 / p99", len(s.latencies)),
		distribution(s.latencies), "p50 ≤ 20 ms, p99 ≤ 80 ms",
		fmt.Sprintf("216 / – / 345 ms: p50 %s, p99 %s", ratio(float64(refP50), float64(quantile(s.latencies, 0.5))), ratio(float64(refP99), float64(quantile(s.latencies, 0.99)))))
	bd := r.breakdown
	row("where a publish at concurrency 1 spends its time (means)",
		fmt.Sprintf("request → certificate %s (API server time for the request's writes, its delete included: %s; signing: %s); the rest of the publish (key, files, mounts) %s",
			ms(bd.roundTrip), ms(bd.apiWrites), ms(bd.sign), ms(mean(s.latencies)-bd.roundTrip)), "", "")
	row(fmt.Sprintf("NodePublishVolume → files ready, concurrency %d (N=%d): p50 / p90 / p99", c.concurrency, len(c.latencies)),
		distribution(c.latencies), "", "")
	row(fmt.Sprintf("issuances per second at concurrency %d", c.concurrency),
		fmt.Sprintf("%.0f/s", c.perSecond()), "≥ 200/s",
		fmt.Sprintf("5/s at concurrency 16 (20/s with limits lifted): %.0f× (%.0f×)", c.perSecond()/refRate, c.perSecond()/refRateHi))

	row("driver RSS idle", rss(r.driverRSS.idle), "≤ 25 MiB", fmt.Sprintf("73–90 MB: %s", ratio(refRSSLow, float64(r.driverRSS.idle.Total()))))
	row("driver RSS with 100 volumes", rss(r.driverRSS.at100), "", "")
	row(fmt.Sprintf("driver RSS with %d volumes", r.volumes), rss(r.driverRSS.atAll), "", "")
	row(fmt.Sprintf("driver RSS per volume, 100 → %d volumes", r.volumes),
		fmt.Sprintf("%.1f KiB", float64(r.driverRSS.atAll.Total()-r.driverRSS.at100.Total())/float64(r.volumes-100)/1024), "≤ 10 KiB", "")
	row(fmt.Sprintf("controller RSS after %d issuances", r.volumes), rss(r.controllerRSS), "", "")

	per := func(v float64) string { return fmt.Sprintf("%.2f", v/r.issuances) }
	row(fmt.Sprintf("API requests per issuance (concurrency %d run): reads / writes / watches started", c.concurrency),
		fmt.Sprintf("%s / %s / %s", per(r.api.reads), per(r.api.writes), per(r.api.watches)), "≤ 4 writes, no polling", "")
	row("CertificateSigningRequest writes per issuance", per(r.api.csrWrites), "≤ 4", "")
	row("requests left after the run", fmt.Sprintf("%d (all gone %s after the last publish)", r.cleanup.left, ms(r.cleanup.took)), "0", "every one left behind")
	var total time.Duration
	for _, d := range r.cpu {
		total += d
	}
	row("CPU per issuance: driver / controller / kube-apiserver / etcd = total",
		fmt.Sprintf("%s / %s / %s / %s = %s (at most %.0f issuances/s on %d idle cores)",
			ms(r.cpu[0]), ms(r.cpu[1]), ms(r.cpu[2]), ms(r.cpu[3]), ms(total), float64(r.machine.cpus)*float64(time.Second)/float64(total), r.machine.cpus),
		"", "")

	if st := r.storm; st != nil {
		row(fmt.Sprintf("renewal storm, %d volumes due at once (driver defaults: 20 renewals/s, burst 40)", st.volumes),
			fmt.Sprintf("all renewed in %.1f s; peak %.0f renewals/s, %.0f API requests/s; %.0f failures; %d requests left",
				st.took.Seconds(), st.peakRenewals, st.peakAPI, st.failed, st.cleanup.left), "", "")
	}
}

// Reference facts about cert-manager's Certificate → Secret path, from its
// code and defaults; not measured here.
const (
	refCertManagerPath   = "a CertificateRequest written and approved per issuance, and a temporary Secret for the next key, before the Secret (and an Order and Challenges for ACME)"
	refCertManagerClient = "its controller's API client is limited to 20 QPS, burst 50, by default"
)

// rows are the figures of the Certificate runs.
func (c *certificateResults) rows(row func(measure, result, goal, reference string), cpus int) {
	s, cc := c.serial, c.concurrent
	sk, k := c.serialCost, c.concurrentCost
	row(fmt.Sprintf("Certificate create → its Secret seen holding a certificate for its key, concurrency 1 (N=%d): p50 / p90 / p99", len(s.toSecret)),
		distribution(s.toSecret), "", refCertManagerPath)
	row("Certificate create → Ready seen, concurrency 1: p50 / p90 / p99", distribution(s.toReady), "", "")
	req := sk.requests
	row("where an issuance at concurrency 1 spends its time (means)",
		fmt.Sprintf("create → Secret %s, → Ready %s; API server time per request: Certificate create %s, Secret read %s, Secret create %s, status write %s; signing %s",
			ms(mean(s.toSecret)), ms(mean(s.toReady)),
			ms(seconds(req[requestKey{"certificates", "", "POST"}].meanSeconds())),
			ms(seconds(req[requestKey{"secrets", "", "GET"}].meanSeconds())),
			ms(seconds(req[requestKey{"secrets", "", "POST"}].meanSeconds())),
			ms(seconds(req[requestKey{"certificates", "status", "PUT"}].meanSeconds())),
			ms(sk.sign)), "", "")
	row(fmt.Sprintf("Certificate create → its Secret seen, %d in flight (N=%d): p50 / p90 / p99", cc.inflight, len(cc.toSecret)),
		distribution(cc.toSecret), "", "")
	row(fmt.Sprintf("Certificate create → Ready seen, %d in flight: p50 / p90 / p99", cc.inflight), distribution(cc.toReady), "", "")
	row(fmt.Sprintf("Certificates issued per second, %d in flight", cc.inflight), fmt.Sprintf("%.0f/s", cc.perSecond()), "", refCertManagerClient)
	row(fmt.Sprintf("the Certificate controller (%.0f workers) per issuance, concurrency 1 / %d in flight", c.workers, cc.inflight),
		fmt.Sprintf("%.2f / %.2f reconciles (requests refused with a conflict: %.2f / %.2f); reconciling %s / %s; in its work queue %s / %s",
			sk.reconciles, k.reconciles, sk.requests.conflicts()/sk.n, k.requests.conflicts()/k.n,
			ms(sk.reconcile), ms(k.reconcile), ms(sk.queue), ms(k.queue)), "", "")

	per := func(v float64) string { return fmt.Sprintf("%.2f", v/k.n) }
	row(fmt.Sprintf("API requests per issuance (%d in flight, the harness's create included): reads / writes / watches started", cc.inflight),
		fmt.Sprintf("%s / %s / %s", per(k.api.reads), per(k.api.writes), per(k.api.watches)), "", "")
	row("API writes per issuance, by resource", k.requests.perIssuance(k.n, true), "", "")
	row("API reads per issuance, by resource", k.requests.perIssuance(k.n, false), "", "")
	total := k.cpu[1] + k.cpu[2] + k.cpu[3]
	row(fmt.Sprintf("CPU per issuance (%d in flight): controller / kube-apiserver / etcd = total", cc.inflight),
		fmt.Sprintf("%s / %s / %s = %s (at most %.0f issuances/s on %d idle cores)",
			ms(k.cpu[1]), ms(k.cpu[2]), ms(k.cpu[3]), ms(total), float64(cpus)*float64(time.Second)/float64(total), cpus), "", "")
	cl := c.cleanup
	row(fmt.Sprintf("controller RSS before the Certificates; with %d; after deleting them", cl.certificates),
		fmt.Sprintf("%s; %s; %s", rss(c.controllerRSS.before), rss(c.controllerRSS.issued), rss(c.controllerRSS.deleted)), "", "")
	row("Certificates / Secrets left after deleting them",
		fmt.Sprintf("%d / %d (%d Certificates deleted in %s, then their Secrets in %s, one request each)",
			cl.leftCertificates, cl.leftSecrets, cl.certificates, ms(cl.certificatesTook), ms(cl.secretsTook)), "0 / 0", "")
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
