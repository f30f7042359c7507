package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/lockdown/lockdown/pkg/events"
)

var services = []string{events.ServiceContainment, events.ServiceAssessor, events.ServiceRotator, events.ServiceNotifier}

// root is the repository root (this package is deploy/).
const root = ".."

// readsVariables returns the LOCKDOWN_* variables a service reads, from
// its generated configuration reference (a test in the service keeps that
// file equal to its config struct).
func readsVariables(t *testing.T, service string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docs", "config", service+".md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(LOCKDOWN_[A-Z0-9_]+)` \\|").FindAllStringSubmatch(string(b), -1) {
		out[m[1]] = true
	}
	if len(out) < 5 {
		t.Fatalf("docs/config/%s.md lists only %d variables", service, len(out))
	}
	return out
}

// cliVariables are the LOCKDOWN_* variables the CLI reads (EnvOr calls).
func cliVariables(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	files, _ := filepath.Glob(filepath.Join(root, "cmd", "lockdown", "internal", "cli", "*.go"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`EnvOr\("([A-Z_]+)"`).FindAllStringSubmatch(string(b), -1) {
			out["LOCKDOWN_"+m[1]] = true
		}
	}
	out["LOCKDOWN_NATS_PASSWORD"] = true // read directly for the connection
	return out
}

// standardOTel are the OpenTelemetry SDK variables the services honour.
var standardOTel = []string{"OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
	"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"}

type composeFile struct {
	Services map[string]struct {
		Image       string `yaml:"image"`
		Build       *struct{ Context, Dockerfile string }
		Environment map[string]string `yaml:"environment"`
		EnvFile     []struct {
			Path     string `yaml:"path"`
			Required bool   `yaml:"required"`
		} `yaml:"env_file"`
		DependsOn map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		Healthcheck *struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		Deploy *struct {
			Replicas int `yaml:"replicas"`
		} `yaml:"deploy"`
		Volumes  []string `yaml:"volumes"`
		Ports    []string `yaml:"ports"`
		Profiles []string `yaml:"profiles"`
		Command  []string `yaml:"command"`
		Restart  string   `yaml:"restart"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

func TestCompose(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	t.Run(".env.example lists exactly the variables the compose file substitutes", func(t *testing.T) {
		// A variable listed and never used (the dropped CLI database role)
		// sends an operator looking for something that does not exist; one
		// used and not listed runs on its change-me default.
		example, err := os.ReadFile(filepath.Join(root, ".env.example"))
		if err != nil {
			t.Fatal(err)
		}
		listed := map[string]bool{}
		for _, line := range strings.Split(string(example), "\n") {
			if name, _, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(name, "#") {
				listed[name] = true
			}
		}
		used := map[string]bool{}
		for _, m := range regexp.MustCompile(`\$\{(LOCKDOWN_[A-Z0-9_]+)`).FindAllStringSubmatch(string(b), -1) {
			used[m[1]] = true
		}
		for v := range listed {
			if !used[v] {
				t.Errorf(".env.example lists %s, which docker-compose.yml never uses", v)
			}
		}
		for v := range used {
			if !listed[v] {
				t.Errorf("docker-compose.yml substitutes %s, which .env.example does not list", v)
			}
		}
	})
	t.Run("every Lockdown service is there, built from a Dockerfile that exists, with a health check", func(t *testing.T) {
		for _, svc := range services {
			s, ok := c.Services[svc]
			if !ok {
				t.Fatalf("no %s service", svc)
			}
			if s.Build == nil || s.Build.Context != "." {
				t.Fatalf("%s is not built from the repository root", svc)
			}
			if _, err := os.Stat(filepath.Join(root, s.Build.Dockerfile)); err != nil {
				t.Errorf("%s: %v", svc, err)
			}
			if s.Healthcheck == nil || !slices.Equal(s.Healthcheck.Test, []string{"CMD", "/usr/local/bin/" + svc, "healthcheck"}) {
				t.Errorf("%s: health check %v", svc, s.Healthcheck)
			}
		}
	})
	t.Run("every environment variable of a service is one it reads", func(t *testing.T) {
		for _, svc := range services {
			reads := readsVariables(t, svc)
			for k := range c.Services[svc].Environment {
				if !reads[k] && !slices.Contains(standardOTel, k) {
					t.Errorf("%s sets %s, which it does not read", svc, k)
				}
			}
			for _, required := range []string{"LOCKDOWN_NATS_URL", "LOCKDOWN_NATS_USER", "LOCKDOWN_NATS_PASSWORD", "LOCKDOWN_DATABASE_URL", "LOCKDOWN_HEALTH_ADDR"} {
				if _, ok := c.Services[svc].Environment[required]; !ok {
					t.Errorf("%s lacks %s", svc, required)
				}
			}
		}
		cli := cliVariables(t)
		for _, svc := range []string{"lockdown", "siem", "replayer", "nats-install"} {
			for k := range c.Services[svc].Environment {
				if !cli[k] {
					t.Errorf("%s sets %s, which the CLI does not read", svc, k)
				}
			}
		}
	})
	t.Run("each service logs in as its own NATS user with that user's password, and NATS knows every user", func(t *testing.T) {
		nats := c.Services["nats"].Environment
		for _, user := range events.NATSUsers() {
			if _, ok := nats[events.NATSPasswordEnv(user)]; !ok {
				t.Errorf("nats lacks %s", events.NATSPasswordEnv(user))
			}
		}
		for name, want := range map[string]string{"containment": "containment", "assessor": "assessor", "rotator": "rotator", "notifier": "notifier",
			"lockdown": events.UserOperator, "siem": events.UserSIEM, "replayer": events.UserReplayer, "nats-install": events.UserAdmin} {
			env := c.Services[name].Environment
			if env["LOCKDOWN_NATS_USER"] != want {
				t.Errorf("%s logs in as %q, want %q", name, env["LOCKDOWN_NATS_USER"], want)
			}
			if pw := env["LOCKDOWN_NATS_PASSWORD"]; !strings.Contains(pw, "${"+events.NATSPasswordEnv(want)+":") {
				t.Errorf("%s's password is %q, want ${%s…}", name, pw, events.NATSPasswordEnv(want))
			}
		}
	})
	t.Run("each service connects to PostgreSQL as its own role, the CLI not at all, and the roles are installed", func(t *testing.T) {
		if url, ok := c.Services["lockdown"].Environment["LOCKDOWN_DATABASE_URL"]; ok {
			t.Errorf("the CLI connects to PostgreSQL (%q): it reads the read model in NATS", url)
		}
		for name, role := range map[string]string{"containment": "containment", "assessor": "assessor", "rotator": "rotator", "notifier": "notifier"} {
			url := c.Services[name].Environment["LOCKDOWN_DATABASE_URL"]
			if !strings.HasPrefix(url, "postgres://"+role+":${LOCKDOWN_POSTGRES_PASSWORD_"+strings.ToUpper(role)+":") {
				t.Errorf("%s connects with %q, want the role %s", name, url, role)
			}
		}
		pg := c.Services["postgres"]
		if !slices.ContainsFunc(pg.Volumes, func(v string) bool {
			return strings.HasSuffix(v, ":/docker-entrypoint-initdb.d/10-lockdown-roles.sh:ro")
		}) ||
			!slices.Contains(pg.Volumes, "./deploy/postgres/roles.sql:/lockdown/roles.sql:ro") {
			t.Errorf("postgres does not install the roles on first start: %v", pg.Volumes)
		}
	})
	t.Run("the install step provisions NATS as admin before any service starts", func(t *testing.T) {
		install := c.Services["nats-install"]
		if !slices.Equal(install.Command, []string{"install", "nats"}) || install.Restart != "no" {
			t.Errorf("nats-install runs %v with restart %q", install.Command, install.Restart)
		}
		for _, svc := range services {
			if d, ok := c.Services[svc].DependsOn["nats-install"]; !ok || d.Condition != "service_completed_successfully" {
				t.Errorf("%s starts without waiting for the install step", svc)
			}
		}
		for name, s := range c.Services {
			if name != "nats-install" && name != "nats" && strings.Contains(s.Environment["LOCKDOWN_NATS_PASSWORD"], events.NATSPasswordEnv(events.UserAdmin)) {
				t.Errorf("%s holds the NATS admin password", name)
			}
		}
	})
	t.Run("ports match the servers' configuration", func(t *testing.T) {
		conf, err := os.ReadFile(filepath.Join(root, "deploy", "nats", "nats.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(conf), "listen: 0.0.0.0:4222") || !strings.Contains(string(conf), "include auth.conf") {
			t.Error("deploy/nats/nats.conf does not listen on 4222 with auth.conf")
		}
		hcl, err := os.ReadFile(filepath.Join(root, "deploy", "compose", "vault.hcl"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(hcl), `address     = "0.0.0.0:8200"`) {
			t.Error("deploy/compose/vault.hcl does not listen on 8200")
		}
		for _, svc := range services {
			env := c.Services[svc].Environment
			if env["LOCKDOWN_NATS_URL"] != "nats://nats:4222" {
				t.Errorf("%s: NATS at %q", svc, env["LOCKDOWN_NATS_URL"])
			}
			if env["LOCKDOWN_HEALTH_ADDR"] != ":8080" {
				t.Errorf("%s: health at %q (the image's healthcheck asks :8080)", svc, env["LOCKDOWN_HEALTH_ADDR"])
			}
			if a, ok := env["LOCKDOWN_VAULT_ADDR"]; ok && a != "http://vault:8200" {
				t.Errorf("%s: Vault at %q", svc, a)
			}
		}
		if got := c.Services["notifier"].Environment["LOCKDOWN_SMTP_ADDR"]; got != "mailpit:1025" {
			t.Errorf("notifier sends to %q", got)
		}
	})
	t.Run("only the services that need Vault get a token, each its own, in the files vault-init writes", func(t *testing.T) {
		const dir, mount = "./deploy/compose/secrets/tokens", "/run/lockdown/tokens"
		want := map[string]struct {
			vars map[string]string
			mode string
		}{
			// Containment replaces every token in every incident: it
			// writes the folder; the rotators only re-read theirs.
			"containment": {map[string]string{"LOCKDOWN_VAULT_SEAL_TOKEN_FILE": "seal", "LOCKDOWN_VAULT_RECOVERY_TOKEN_FILE": "recovery", "LOCKDOWN_ROTATOR_TOKEN_FILE": "rotator"}, ""},
			"rotator":     {map[string]string{"LOCKDOWN_VAULT_TOKEN_FILE": "rotator"}, ":ro"},
		}
		for svc, w := range want {
			env := c.Services[svc].Environment
			for k, name := range w.vars {
				if env[k] != mount+"/"+name+".token" {
					t.Errorf("%s: %s=%q", svc, k, env[k])
				}
			}
			if !slices.Contains(c.Services[svc].Volumes, dir+":"+mount+w.mode) {
				t.Errorf("%s does not mount %s at %s%s: %v", svc, dir, mount, w.mode, c.Services[svc].Volumes)
			}
			if len(c.Services[svc].EnvFile) != 0 {
				t.Errorf("%s reads env files %v: tokens are in files", svc, c.Services[svc].EnvFile)
			}
		}
		for _, svc := range []string{"assessor", "notifier"} {
			for _, v := range c.Services[svc].Volumes {
				if strings.HasPrefix(v, dir) {
					t.Errorf("%s mounts the token files", svc)
				}
			}
		}
		script, err := os.ReadFile(filepath.Join(root, "deploy", "compose", "vault-init.sh"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(script), `for r in seal recovery rotator; do
  vault token create -role="lockdown-$r" -field=token > "$tokens/$r.token"`) {
			t.Error("vault-init.sh does not issue the three tokens from their roles into tokens/")
		}
	})
	t.Run("dependencies exist and wait for health, volumes are declared, images are pinned, the rotator scales out", func(t *testing.T) {
		for name, s := range c.Services {
			for dep, d := range s.DependsOn {
				if _, ok := c.Services[dep]; !ok {
					t.Errorf("%s depends on unknown %s", name, dep)
				}
				if d.Condition == "service_completed_successfully" && len(c.Services[dep].Command) == 0 {
					t.Errorf("%s waits for %s to finish, which is not a one-shot command", name, dep)
				} else if d.Condition != "service_healthy" && d.Condition != "service_started" && d.Condition != "service_completed_successfully" {
					t.Errorf("%s → %s: condition %q", name, dep, d.Condition)
				}
				if d.Condition == "service_healthy" && c.Services[dep].Healthcheck == nil {
					t.Errorf("%s waits for %s to be healthy, which has no health check", name, dep)
				}
			}
			for _, v := range s.Volumes {
				src := strings.SplitN(v, ":", 2)[0]
				if strings.HasPrefix(src, "./") {
					// deploy/compose/secrets is written by vault-init, not kept in git.
					if _, err := os.Stat(filepath.Join(root, src)); err != nil && !strings.HasPrefix(src, "./deploy/compose/secrets/") {
						t.Errorf("%s mounts %s: %v", name, src, err)
					}
				} else if _, ok := c.Volumes[src]; !ok {
					t.Errorf("%s mounts undeclared volume %s", name, src)
				}
			}
			if s.Image != "" && (!strings.Contains(s.Image, ":") || strings.HasSuffix(s.Image, ":latest")) {
				t.Errorf("%s: image %q is not pinned", name, s.Image)
			}
		}
		for name, s := range c.Services {
			for _, p := range s.Ports {
				if !strings.HasPrefix(p, "127.0.0.1:") {
					t.Errorf("%s publishes %s on every interface", name, p)
				}
			}
		}
		if r := c.Services["rotator"].Deploy; r == nil || r.Replicas < 2 {
			t.Errorf("rotator replicas %v", r)
		}
	})
}

func TestDockerfiles(t *testing.T) {
	for dir, bin := range map[string]string{
		"services/containment": "containment", "services/assessor": "assessor", "services/rotator": "rotator",
		"services/notifier": "notifier", "cmd/lockdown": "lockdown",
	} {
		t.Run(dir+" builds a static binary into a non-root image without a shell", func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(root, dir, "Dockerfile"))
			if err != nil {
				t.Fatal(err)
			}
			s := string(b)
			for _, want := range []string{"AS build", "CGO_ENABLED=0", "GOWORK=off", "COPY pkg ./pkg", "COPY " + dir + " ./" + dir,
				"FROM gcr.io/distroless/static-debian12:nonroot", "USER nonroot:nonroot", `ENTRYPOINT ["/usr/local/bin/` + bin + `"]`} {
				if !strings.Contains(s, want) {
					t.Errorf("missing %q", want)
				}
			}
			if _, err := os.Stat(filepath.Join(root, dir, "main.go")); err != nil {
				t.Error(err)
			}
		})
	}
}
