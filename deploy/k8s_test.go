package deploy_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/lockdown/lockdown/pkg/events"
)

// object is the part of a Kubernetes object the checks read.
type object struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Replicas *int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				SecurityContext struct {
					RunAsNonRoot bool `yaml:"runAsNonRoot"`
				} `yaml:"securityContext"`
				Containers []container `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
		// PodDisruptionBudget
		MinAvailable   *int `yaml:"minAvailable"`
		MaxUnavailable *int `yaml:"maxUnavailable"`
		// NetworkPolicy
		PodSelector struct {
			MatchLabels      map[string]string `yaml:"matchLabels"`
			MatchExpressions []struct {
				Key    string   `yaml:"key"`
				Values []string `yaml:"values"`
			} `yaml:"matchExpressions"`
		} `yaml:"podSelector"`
		Egress []struct {
			Ports []struct {
				Port int `yaml:"port"`
			} `yaml:"ports"`
		} `yaml:"egress"`
		// ScaledObject
		ScaleTargetRef struct {
			Name string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicaCount int `yaml:"minReplicaCount"`
		Triggers        []struct {
			Type     string            `yaml:"type"`
			Metadata map[string]string `yaml:"metadata"`
		} `yaml:"triggers"`
	} `yaml:"spec"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Args    []string `yaml:"args"`
	EnvFrom []struct {
		ConfigMapRef struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
	} `yaml:"envFrom"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
	} `yaml:"securityContext"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

func loadK8s(t *testing.T) []object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "deploy", "k8s", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var out []object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o object
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.Kind == "" {
				t.Fatalf("%s: a document without kind", f)
			}
			if o.Kind != "Namespace" && o.Metadata.Namespace != "lockdown" {
				t.Errorf("%s %s is not in namespace lockdown", o.Kind, o.Metadata.Name)
			}
			out = append(out, o)
		}
	}
	return out
}

func byKind(objs []object, kind string) map[string]object {
	out := map[string]object{}
	for _, o := range objs {
		if o.Kind == kind {
			out[o.Metadata.Name] = o
		}
	}
	return out
}

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestKubernetes(t *testing.T) {
	objs := loadK8s(t)
	deployments := byKind(objs, "Deployment")
	secrets := byKind(objs, "Secret")
	configMaps := byKind(objs, "ConfigMap")

	t.Run("each service has a Deployment with probes on its health port, resources and a non-root, read-only container", func(t *testing.T) {
		for _, svc := range services {
			d, ok := deployments["lockdown-"+svc]
			if !ok {
				t.Fatalf("no Deployment lockdown-%s", svc)
			}
			if !matches(d.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels) {
				t.Errorf("%s: selector %v does not match its pods %v", svc, d.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels)
			}
			if !d.Spec.Template.Spec.SecurityContext.RunAsNonRoot || len(d.Spec.Template.Spec.Containers) != 1 {
				t.Fatalf("%s: pod security or containers", svc)
			}
			c := d.Spec.Template.Spec.Containers[0]
			healthPort := 0
			for _, p := range c.Ports {
				if p.Name == "health" {
					healthPort = p.ContainerPort
				}
			}
			if healthPort == 0 || c.LivenessProbe == nil || c.ReadinessProbe == nil ||
				c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
				c.LivenessProbe.HTTPGet.Port != "health" || c.ReadinessProbe.HTTPGet.Port != "health" {
				t.Errorf("%s: probes %+v %+v on port %d", svc, c.LivenessProbe, c.ReadinessProbe, healthPort)
			}
			addr := configMaps["lockdown-config"].Data["LOCKDOWN_HEALTH_ADDR"]
			if _, port, _ := strings.Cut(addr, ":"); port != strconv.Itoa(healthPort) {
				t.Errorf("%s: LOCKDOWN_HEALTH_ADDR %q but the health port is %d", svc, addr, healthPort)
			}
			for _, k := range []string{"cpu", "memory"} {
				if c.Resources.Requests[k] == "" || c.Resources.Limits[k] == "" {
					t.Errorf("%s: no %s request or limit", svc, k)
				}
			}
			if c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation || !c.SecurityContext.ReadOnlyRootFilesystem {
				t.Errorf("%s: container security context", svc)
			}
			if !strings.Contains(c.Image, ":") || strings.HasSuffix(c.Image, ":latest") {
				t.Errorf("%s: image %q is not pinned", svc, c.Image)
			}
		}
	})
	t.Run("every variable set is one the service reads, and every secret reference exists", func(t *testing.T) {
		for _, svc := range services {
			reads := readsVariables(t, svc)
			c := deployments["lockdown-"+svc].Spec.Template.Spec.Containers[0]
			names := map[string]bool{}
			for _, ef := range c.EnvFrom {
				cm, ok := configMaps[ef.ConfigMapRef.Name]
				if !ok {
					t.Errorf("%s: ConfigMap %s does not exist", svc, ef.ConfigMapRef.Name)
				}
				for k := range cm.Data {
					names[k] = true
				}
			}
			for _, e := range c.Env {
				names[e.Name] = true
				if e.ValueFrom != nil {
					ref := e.ValueFrom.SecretKeyRef
					if _, ok := secrets[ref.Name].StringData[ref.Key]; !ok {
						t.Errorf("%s: %s refers to secret %s key %s, which secrets.example.yaml lacks", svc, e.Name, ref.Name, ref.Key)
					}
					if ref.Name != "lockdown-"+svc {
						t.Errorf("%s reads another service's secret %s", svc, ref.Name)
					}
				}
			}
			for k := range names {
				if !reads[k] && !slices.Contains(standardOTel, k) {
					t.Errorf("%s is given %s, which it does not read", svc, k)
				}
			}
			if !names["LOCKDOWN_NATS_USER"] || !names["LOCKDOWN_NATS_PASSWORD"] || !names["LOCKDOWN_DATABASE_URL"] {
				t.Errorf("%s lacks NATS or database credentials", svc)
			}
		}
	})
	t.Run("every service has a PodDisruptionBudget selecting its pods", func(t *testing.T) {
		pdbs := byKind(objs, "PodDisruptionBudget")
		for _, svc := range services {
			p, ok := pdbs["lockdown-"+svc]
			if !ok || !matches(p.Spec.Selector.MatchLabels, deployments["lockdown-"+svc].Spec.Template.Metadata.Labels) {
				t.Errorf("%s: no PodDisruptionBudget selecting its pods", svc)
			}
			if (p.Spec.MinAvailable == nil) == (p.Spec.MaxUnavailable == nil) {
				t.Errorf("%s: set one of minAvailable and maxUnavailable", svc)
			}
		}
	})
	t.Run("network policies deny by default and let each service reach only what it needs", func(t *testing.T) {
		policies := byKind(objs, "NetworkPolicy")
		if d, ok := policies["default-deny"]; !ok || len(d.Spec.PodSelector.MatchLabels) != 0 {
			t.Fatal("no default-deny policy over every pod")
		}
		egress := func(svc string) []int {
			labels := deployments["lockdown-"+svc].Spec.Template.Metadata.Labels
			var ports []int
			for _, p := range policies {
				selected := matches(p.Spec.PodSelector.MatchLabels, labels)
				for _, e := range p.Spec.PodSelector.MatchExpressions {
					selected = selected || slices.Contains(e.Values, labels[e.Key])
				}
				if !selected {
					continue
				}
				for _, e := range p.Spec.Egress {
					for _, port := range e.Ports {
						ports = append(ports, port.Port)
					}
				}
			}
			return ports
		}
		want := map[string][]int{
			"containment": {53, 4222, 5432, 4318, 8200},
			"assessor":    {53, 4222, 5432, 4318},
			"rotator":     {53, 4222, 5432, 4318, 8200},
			"notifier":    {53, 4222, 5432, 4318, 25, 465, 587, 443},
		}
		for svc, ports := range want {
			got := egress(svc)
			for _, p := range ports {
				if !slices.Contains(got, p) {
					t.Errorf("%s cannot reach port %d", svc, p)
				}
			}
			for _, p := range got {
				if !slices.Contains(ports, p) {
					t.Errorf("%s may reach port %d, which it does not need", svc, p)
				}
			}
		}
	})
	t.Run("KEDA scales the rotator on its work queue consumer's lag", func(t *testing.T) {
		so, ok := byKind(objs, "ScaledObject")["lockdown-rotator"]
		if !ok || so.Spec.ScaleTargetRef.Name != "lockdown-rotator" || so.Spec.MinReplicaCount < 1 || len(so.Spec.Triggers) != 1 {
			t.Fatalf("ScaledObject %+v", so.Spec)
		}
		tr := so.Spec.Triggers[0]
		jobs, _ := events.ConsumerOf(events.ConsumerRotatorJobs)
		if tr.Type != "nats-jetstream" || tr.Metadata["stream"] != jobs.Stream || tr.Metadata["consumer"] != jobs.Durable || tr.Metadata["lagThreshold"] == "" {
			t.Errorf("trigger %+v, want stream %s consumer %s", tr, jobs.Stream, jobs.Durable)
		}
		if !strings.HasSuffix(tr.Metadata["natsServerMonitoringEndpoint"], ":8222") {
			t.Errorf("monitoring endpoint %q", tr.Metadata["natsServerMonitoringEndpoint"])
		}
	})
	t.Run("a Job runs the install step as the NATS admin, whose password no service can read", func(t *testing.T) {
		job, ok := byKind(objs, "Job")["lockdown-install-nats"]
		if !ok || len(job.Spec.Template.Spec.Containers) != 1 || !job.Spec.Template.Spec.SecurityContext.RunAsNonRoot {
			t.Fatal("no non-root Job lockdown-install-nats with one container")
		}
		c := job.Spec.Template.Spec.Containers[0]
		if !slices.Equal(c.Args, []string{"install", "nats"}) {
			t.Errorf("install Job runs %v", c.Args)
		}
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef.Name != "" {
				ref := e.ValueFrom.SecretKeyRef
				env[e.Name] = ref.Name + "/" + ref.Key
				if _, ok := secrets[ref.Name].StringData[ref.Key]; !ok {
					t.Errorf("install Job reads secret %s key %s, which secrets.example.yaml lacks", ref.Name, ref.Key)
				}
			}
		}
		if env["LOCKDOWN_NATS_USER"] != events.UserAdmin || env["LOCKDOWN_NATS_PASSWORD"] != "lockdown-nats-admin/nats-password" {
			t.Errorf("install Job logs in as %q with %q", env["LOCKDOWN_NATS_USER"], env["LOCKDOWN_NATS_PASSWORD"])
		}
		for name, d := range deployments {
			for _, e := range d.Spec.Template.Spec.Containers[0].Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef.Name == "lockdown-nats-admin" || e.Value == events.UserAdmin {
					t.Errorf("%s is given the NATS admin identity", name)
				}
			}
		}
	})
	t.Run("the NATS cluster configuration has three routes and Lockdown's users", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(root, "deploy", "nats", "cluster.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(string(b), "nats-route://") != 3 || !strings.Contains(string(b), "include auth.conf") || !strings.Contains(string(b), "jetstream") {
			t.Error("deploy/nats/cluster.conf is not a three-node JetStream cluster with auth.conf")
		}
		// An unauthenticated route lets any server that reaches 6222 join
		// the cluster and see every message.
		if _, cluster, found := strings.Cut(string(b), "cluster {"); !found || !strings.Contains(cluster, "verify: true") || !strings.Contains(cluster, "ca_file") {
			t.Error("deploy/nats/cluster.conf's routes are not mutually authenticated (cluster tls with verify: true)")
		}
	})
}
