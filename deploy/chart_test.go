package deploy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

const chartDir = "helm/pushd"

// valuesFiles are the chart's values files: the defaults and every file in
// ci/ (the convention chart-testing uses).
func valuesFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("want at least 3 values files in %s/ci, found %v", chartDir, files)
	}
	return append([]string{filepath.Join(chartDir, "values.yaml")}, files...)
}

func readValues(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := loader.LoadValues(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return vals
}

// render is `helm template --namespace pushd release .` with the values
// file on top of the chart's defaults, schema validation included.
func render(t *testing.T, vals map[string]any) (map[string]string, error) {
	t.Helper()
	ch, err := loader.LoadDir(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	opts := common.ReleaseOptions{Name: "release", Namespace: "pushd", Revision: 1, IsInstall: true}
	rv, err := chartutil.ToRenderValuesWithSchemaValidation(ch, vals, opts, common.DefaultCapabilities, false)
	if err != nil {
		return nil, err
	}
	return engine.Render(ch, rv)
}

// object is one rendered manifest decoded into its k8s.io/api type.
type object struct {
	file string
	kind string
	obj  any
}

// decodeStrict decodes every document of the rendered templates into its
// typed struct, refusing unknown fields.
func decodeStrict(t *testing.T, out map[string]string) []object {
	t.Helper()
	names := make([]string, 0, len(out))
	for name := range out {
		names = append(names, name)
	}
	sort.Strings(names)
	var objs []object
	for _, name := range names {
		if strings.HasSuffix(name, "NOTES.txt") {
			continue
		}
		for _, doc := range strings.Split(out[name], "\n---") {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			js, err := yaml.YAMLToJSON([]byte(doc))
			if err != nil {
				t.Fatalf("%s: not YAML: %v\n%s", name, err, doc)
			}
			if string(js) == "null" {
				continue
			}
			var meta struct{ APIVersion, Kind string }
			if err := json.Unmarshal(js, &meta); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			obj, err := typed(meta.APIVersion, meta.Kind)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			dec := json.NewDecoder(bytes.NewReader(js))
			dec.DisallowUnknownFields()
			if err := dec.Decode(obj); err != nil {
				t.Fatalf("%s: %s/%s does not decode strictly: %v\n%s", name, meta.APIVersion, meta.Kind, err, doc)
			}
			objs = append(objs, object{file: name, kind: meta.Kind, obj: obj})
		}
	}
	return objs
}

var errUnknownKind = errors.New("unknown apiVersion/kind")

func typed(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, nil
	case "monitoring.coreos.com/v1 ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, nil
	}
	return nil, fmt.Errorf("%w: %s %s", errUnknownKind, apiVersion, kind)
}

func TestChartLint(t *testing.T) {
	for _, f := range valuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			l := lint.RunAll(chartDir, readValues(t, f), "pushd")
			for _, m := range l.Messages {
				t.Logf("lint: %s", m)
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s", m)
				}
			}
		})
	}
}

// TestChartRendersStrict renders the chart with every values file and
// decodes every object into k8s.io/api types with unknown fields refused,
// then checks what the chart promises: the kinds, the lock-down, the
// probes, and no secret in the container's args or plain env values.
func TestChartRendersStrict(t *testing.T) {
	for _, f := range valuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, err := render(t, readValues(t, f))
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			objs := decodeStrict(t, out)
			kinds := map[string]int{}
			var dep *appsv1.Deployment
			var svcs []*corev1.Service
			for _, o := range objs {
				kinds[o.kind]++
				switch v := o.obj.(type) {
				case *appsv1.Deployment:
					dep = v
				case *corev1.Service:
					svcs = append(svcs, v)
				}
			}
			t.Logf("objects: %v", kinds)
			if kinds["Deployment"] != 1 || kinds["Service"] != 2 || kinds["PodDisruptionBudget"] != 1 {
				t.Fatalf("want 1 Deployment, 2 Services, 1 PodDisruptionBudget; got %v", kinds)
			}
			checkServices(t, svcs)
			checkPod(t, dep)
		})
	}
}

func checkServices(t *testing.T, svcs []*corev1.Service) {
	t.Helper()
	for _, s := range svcs {
		admin := strings.HasSuffix(s.Name, "-admin")
		for _, p := range s.Spec.Ports {
			if (p.Name == "admin") != admin {
				t.Errorf("service %s exposes port %s: the admin port must have its own Service", s.Name, p.Name)
			}
		}
		if admin && s.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("admin service %s is %s, want ClusterIP", s.Name, s.Spec.Type)
		}
	}
}

func checkPod(t *testing.T, dep *appsv1.Deployment) {
	t.Helper()
	ps := dep.Spec.Template.Spec
	if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot {
		t.Error("pod: runAsNonRoot not set")
	}
	if len(ps.Containers) != 1 {
		t.Fatalf("want 1 container, got %d", len(ps.Containers))
	}
	c := ps.Containers[0]
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("container: no securityContext")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("container: readOnlyRootFilesystem not set")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("container: allowPrivilegeEscalation not false")
	case sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0:
		t.Errorf("container: capabilities %+v, want drop ALL", sc.Capabilities)
	case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("container: seccomp RuntimeDefault not set")
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe %+v, want GET /readyz", p)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/livez" {
		t.Errorf("liveness probe %+v, want GET /livez", p)
	}
	if len(c.Args) != 0 || len(c.Command) != 0 {
		t.Errorf("container args %q command %q: configuration goes through env and files", c.Args, c.Command)
	}
	secretEnv := map[string]bool{"PUSHD_ADMIN_API_KEY": true, "PUSHD_JWT_HS256_SECRET": true, "REDIS_PASSWORD": true}
	sawKey := false
	for _, e := range c.Env {
		if secretEnv[e.Name] {
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.Value != "" {
				t.Errorf("env %s must come from a Secret, got %+v", e.Name, e)
			}
			sawKey = sawKey || e.Name == "PUSHD_ADMIN_API_KEY"
		}
		if e.Name == "PUSHD_REDIS" && e.ValueFrom == nil && strings.Contains(e.Value, "@") && !strings.Contains(e.Value, ":$(REDIS_PASSWORD)@") {
			t.Errorf("PUSHD_REDIS %q carries credentials in plain text", e.Value)
		}
	}
	if !sawKey {
		t.Error("PUSHD_ADMIN_API_KEY not set: pushd refuses a non-loopback admin listener without it")
	}
}

// TestChartGracePeriodCoversDrain computes, from the environment each
// rendered Deployment hands pushd, the longest a drain can take (drain
// delay + drain duration + shutdown timeout) and checks that
// terminationGracePeriodSeconds leaves room after it.
func TestChartGracePeriodCoversDrain(t *testing.T) {
	for _, f := range valuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, err := render(t, readValues(t, f))
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			var dep *appsv1.Deployment
			for _, o := range decodeStrict(t, out) {
				if d, ok := o.obj.(*appsv1.Deployment); ok {
					dep = d
				}
			}
			env := map[string]string{}
			for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
				env[e.Name] = e.Value
			}
			var need time.Duration
			for _, k := range []string{"PUSHD_DRAIN_DELAY", "PUSHD_DRAIN_DURATION", "PUSHD_SHUTDOWN_TIMEOUT"} {
				d, err := time.ParseDuration(env[k])
				if err != nil {
					t.Fatalf("%s=%q: %v", k, env[k], err)
				}
				need += d
			}
			gp := dep.Spec.Template.Spec.TerminationGracePeriodSeconds
			if gp == nil {
				t.Fatal("terminationGracePeriodSeconds not set (Kubernetes default 30 s)")
			}
			grace := time.Duration(*gp) * time.Second
			t.Logf("drain needs %v, grace period %v", need, grace)
			if grace <= need {
				t.Errorf("terminationGracePeriodSeconds %v does not cover the drain (%v): SIGKILL would cut it", grace, need)
			}
		})
	}
}

// TestChartRejectsBadValues checks that values.schema.json and the
// templates' own checks refuse what would deploy a broken or unsafe pushd.
func TestChartRejectsBadValues(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown key", "replicas: 3", "replicas"},
		{"zero replicas", "replicaCount: 0", "replicaCount"},
		{"drain as a string", "drain: {delaySeconds: 5s, durationSeconds: 20, shutdownTimeoutSeconds: 10, marginSeconds: 5}", "delaySeconds"},
		{"no margin", "drain: {delaySeconds: 5, durationSeconds: 20, shutdownTimeoutSeconds: 10, marginSeconds: 0}", "marginSeconds"},
		{"secret through config", "config: {admin-api-key: hunter2hunter2hunter2}", "admin-api-key"},
		{"unsafe sysctl", "sysctls: [{name: net.core.somaxconn, value: '65535'}]", "sysctls"},
		{"sentinel mode", "redis: {mode: sentinel}", "mode"},
		{"short HS256 secret", "secrets: {jwtHS256Secret: short}", "jwtHS256Secret"},
		{"bad cluster address", "redis: {mode: cluster, cluster: {addrs: ['redis-0']}}", "addrs"},
		{"tls without a Secret", "tls: {enabled: true}", "tls.secretName"},
		{"cluster without addresses", "redis: {mode: cluster}", "redis.cluster.addrs"},
		{"hs256 without a secret", "auth: {mode: hs256}", "jwtHS256Secret"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var vals map[string]any
			if err := yaml.Unmarshal([]byte(tc.yaml), &vals); err != nil {
				t.Fatal(err)
			}
			_, err := render(t, vals)
			if err == nil {
				t.Fatalf("values %q rendered; want an error", tc.yaml)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %q", err, tc.want)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestChartEnvNamesAreFlags checks every PUSHD_* variable the rendered
// Deployments set against the real binary's flags (pushd -h), so a
// renamed flag or a typo in the chart fails here rather than at startup.
func TestChartEnvNamesAreFlags(t *testing.T) {
	out, _ := exec.Command(buildPushd(t), "-h").CombinedOutput()
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if len(flags) < 30 {
		t.Fatalf("found %d flags in pushd -h:\n%s", len(flags), out)
	}
	for _, f := range valuesFiles(t) {
		out, err := render(t, readValues(t, f))
		if err != nil {
			t.Fatalf("%s: render: %v", f, err)
		}
		n := 0
		for _, o := range decodeStrict(t, out) {
			dep, ok := o.obj.(*appsv1.Deployment)
			if !ok {
				continue
			}
			for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
				name, ok := strings.CutPrefix(e.Name, "PUSHD_")
				if !ok {
					continue
				}
				n++
				flag := strings.ReplaceAll(strings.ToLower(name), "_", "-")
				if !flags[flag] {
					t.Errorf("%s: env %s has no flag -%s in pushd", filepath.Base(f), e.Name, flag)
				}
			}
		}
		t.Logf("%s: %d PUSHD_* variables, all real flags", filepath.Base(f), n)
	}
}

// TestChartConfigPassesCheckConfig hands the environment each rendered
// Deployment gives pushd to the real binary's -check-config. Values from
// Secrets get stand-ins (the kubelet's $(VAR) expansion included), and
// the files the pod mounts from Secrets under /etc/pushd/ (TLS
// certificate and key, JWT secret and keys, Redis CA) are made as
// stand-ins in a temp dir.
func TestChartConfigPassesCheckConfig(t *testing.T) {
	bin := buildPushd(t)
	for _, f := range valuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, err := render(t, readValues(t, f))
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			var env []string
			vars := map[string]string{}
			files := standInFiles(t)
			for _, o := range decodeStrict(t, out) {
				dep, ok := o.obj.(*appsv1.Deployment)
				if !ok {
					continue
				}
				for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
					v := e.Value
					switch {
					case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
						v = "stand-in-secret-0123456789abcdefghijklmnop"
						if e.ValueFrom.SecretKeyRef.Key == "redis-url" {
							v = "redis://127.0.0.1:6379/0"
						}
					case strings.HasPrefix(v, "/etc/pushd/"):
						v = mounted(t, files, v)
					}
					for k, kv := range vars {
						v = strings.ReplaceAll(v, "$("+k+")", kv)
					}
					vars[e.Name] = v
					env = append(env, e.Name+"="+v)
				}
			}
			cmd := exec.Command(bin, "-check-config")
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
			b, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("pushd -check-config with the chart's environment: %v\n%s\nenv: %q", err, b, env)
			}
			t.Logf("pushd -check-config: ok with %d variables", len(env))
		})
	}
}

// standInFiles makes the files a pod finds under /etc/pushd/ (mounted
// from Secrets), keyed by their base name: a self-signed certificate and
// its key, an HS256 secret, an Ed25519 public key.
func standInFiles(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pushd"},
		DNSNames: []string{"pushd"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edDER, err := x509.MarshalPKIXPublicKey(edPub)
	if err != nil {
		t.Fatal(err)
	}
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	contents := map[string][]byte{
		"tls.crt":          cert,
		"ca.crt":           cert,
		"tls.key":          pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		"jwt-hs256-secret": []byte("stand-in-hs256-secret-0123456789abcdef\n"),
		"jwt-keys.pem":     pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: edDER}),
	}
	paths := map[string]string{}
	for name, b := range contents {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		paths[name] = p
	}
	return paths
}

// mounted maps a path the pod sees under /etc/pushd/ to its stand-in.
func mounted(t *testing.T, files map[string]string, path string) string {
	t.Helper()
	p, ok := files[filepath.Base(path)]
	if !ok {
		t.Fatalf("the chart mounts %s, which has no stand-in", path)
	}
	return p
}
