package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	"sigs.k8s.io/yaml"
)

// TestLoadtestJob checks deploy/loadtest/job.yaml: it decodes strictly
// into a batch/v1 Job; it is Indexed with completions = parallelism = the
// N of -shard, whose i is $(JOB_COMPLETION_INDEX); one pod per node; and
// every flag in its args is a flag of the real loadtest (built from this
// repository), with a -start-at that parses as RFC 3339.
func TestLoadtestJob(t *testing.T) {
	b, err := os.ReadFile("loadtest/job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	var job batchv1.Job
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&job); err != nil {
		t.Fatalf("job.yaml does not decode strictly into batch/v1 Job: %v", err)
	}
	if job.APIVersion != "batch/v1" || job.Kind != "Job" {
		t.Fatalf("%s %s", job.APIVersion, job.Kind)
	}
	s := job.Spec
	if s.CompletionMode == nil || *s.CompletionMode != batchv1.IndexedCompletion || s.Completions == nil || s.Parallelism == nil ||
		*s.Completions != *s.Parallelism || s.BackoffLimit == nil || *s.BackoffLimit != 0 {
		t.Fatalf("spec: mode %v completions %v parallelism %v backoff %v", s.CompletionMode, s.Completions, s.Parallelism, s.BackoffLimit)
	}
	if a := s.Template.Spec.Affinity; a == nil || a.PodAntiAffinity == nil || len(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 ||
		a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].TopologyKey != "kubernetes.io/hostname" {
		t.Fatalf("pods are not spread one per node: %+v", a)
	}
	if len(s.Template.Spec.Containers) != 1 {
		t.Fatalf("%d containers", len(s.Template.Spec.Containers))
	}
	args := s.Template.Spec.Containers[0].Args
	flags := map[string]string{}
	for i := 0; i < len(args); i++ {
		if !strings.HasPrefix(args[i], "-") || i+1 == len(args) {
			t.Fatalf("args must be -flag value pairs: %q", args[i:])
		}
		flags[args[i]] = args[i+1]
		i++
	}
	if want := "$(JOB_COMPLETION_INDEX)/" + strconv.Itoa(int(*s.Completions)); flags["-shard"] != want {
		t.Fatalf("-shard %q, want %q", flags["-shard"], want)
	}
	if _, err := time.Parse(time.RFC3339, flags["-start-at"]); err != nil {
		t.Fatalf("-start-at: %v", err)
	}
	for _, f := range []string{"-run-id", "-redis", "-ramp-timeout", "-json"} {
		if flags[f] == "" {
			t.Errorf("args lack %s", f)
		}
	}
	// Every flag is one the real loadtest knows.
	bin := filepath.Join(t.TempDir(), "loadtest")
	cmd := exec.Command("go", "build", "-o", bin, "./loadtest")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./loadtest: %v\n%s", err, out)
	}
	help, _ := exec.Command(bin, "-help").CombinedOutput()
	for f := range flags {
		if !strings.Contains(string(help), "\n  "+f+" ") && !strings.Contains(string(help), "\n  "+f+"\n") {
			t.Errorf("%s is not a loadtest flag:\n%s", f, help)
		}
	}
}
