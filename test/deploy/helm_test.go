package deploy

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
)

const chart = "../../deploy/helm/tileproxy"

// rendered is one `helm template` run, decoded strictly.
type rendered struct {
	deployment     *appsv1.Deployment
	service        *corev1.Service
	serviceAccount *corev1.ServiceAccount
	configMap      *corev1.ConfigMap
	secret         *corev1.Secret
	pdb            *policyv1.PodDisruptionBudget
	hpa            *autoscalingv2.HorizontalPodAutoscaler
	serviceMonitor *monitoringv1.ServiceMonitor
	networkPolicy  *networkingv1.NetworkPolicy
	kinds          []string
}

// into points *p at a new T and returns it, to decode into.
func into[T any](p **T) any {
	*p = new(T)
	return *p
}

func helmBin(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("helm")
	if err != nil {
		testenv.Require(t, "helm", "it is not installed (go install helm.sh/helm/v3/cmd/helm@v3.22.0)")
	}
	return bin
}

// render runs helm lint and helm template over the chart with the given
// values files, and decodes every object into its Kubernetes type with
// unknown fields refused.
func render(t *testing.T, values ...string) *rendered {
	t.Helper()
	bin := helmBin(t)
	args := []string{}
	for _, v := range values {
		args = append(args, "-f", chart+"/"+v)
	}
	if out, err := exec.Command(bin, append([]string{"lint", "--strict", chart}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("helm lint %v: %v\n%s", values, err, out)
	}
	out, err := exec.Command(bin, append([]string{"template", "tp", chart, "--namespace", "maps"}, args...)...).Output()
	if err != nil {
		t.Fatalf("helm template %v: %v", values, err)
	}
	r := &rendered{}
	for _, doc := range bytes.Split(out, []byte("\n---")) {
		var head struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("not YAML: %v\n%s", err, doc)
		}
		if head.Kind == "" {
			continue
		}
		r.kinds = append(r.kinds, head.Kind)
		var target any
		switch head.APIVersion + " " + head.Kind {
		case "apps/v1 Deployment":
			target = into(&r.deployment)
		case "v1 Service":
			target = into(&r.service)
		case "v1 ServiceAccount":
			target = into(&r.serviceAccount)
		case "v1 ConfigMap":
			target = into(&r.configMap)
		case "v1 Secret":
			target = into(&r.secret)
		case "policy/v1 PodDisruptionBudget":
			target = into(&r.pdb)
		case "autoscaling/v2 HorizontalPodAutoscaler":
			target = into(&r.hpa)
		case "monitoring.coreos.com/v1 ServiceMonitor":
			target = into(&r.serviceMonitor)
		case "networking.k8s.io/v1 NetworkPolicy":
			target = into(&r.networkPolicy)
		default:
			t.Fatalf("unexpected object %s %s", head.APIVersion, head.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, target); err != nil {
			t.Fatalf("%s does not decode strictly into its type: %v\n%s", head.Kind, err, doc)
		}
	}
	return r
}

// TestHelmChart renders the chart with its defaults and with every option
// on, and checks what a cluster operator relies on.
func TestHelmChart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []string
		want   []string // kinds rendered
	}{
		{"defaults", nil, []string{"ServiceAccount", "Secret", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget"}},
		{"full", []string{"ci/full-values.yaml"}, []string{"ServiceAccount", "Secret", "ConfigMap", "Service", "Deployment",
			"PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceMonitor", "NetworkPolicy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := render(t, tc.values...)
			for _, k := range tc.want {
				if !strings.Contains(strings.Join(r.kinds, ","), k) {
					t.Errorf("%s not rendered (got %v)", k, r.kinds)
				}
			}
			if len(r.kinds) != len(tc.want) {
				t.Errorf("rendered %v, want %v", r.kinds, tc.want)
			}
			checkDeployment(t, r)
			checkConfig(t, r)
			if tc.name == "full" {
				checkFull(t, r)
			}
		})
	}
}

func checkDeployment(t *testing.T, r *rendered) {
	t.Helper()
	d := r.deployment
	if d == nil {
		t.Fatal("no Deployment")
	}
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" ||
		c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("probes: %+v %+v", c.LivenessProbe, c.ReadinessProbe)
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("container securityContext: %+v", sc)
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Errorf("pod securityContext: %+v", pod.SecurityContext)
	}
	if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources: %+v", c.Resources)
	}
	// The HMAC secret comes from a Secret, never inline.
	var fromSecret bool
	for _, e := range c.Env {
		if e.Name == "TILEPROXY_HMAC_SECRET" && e.Value == "" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			fromSecret = e.ValueFrom.SecretKeyRef.Name == r.secret.Name
		}
	}
	if !fromSecret {
		t.Errorf("TILEPROXY_HMAC_SECRET not from the chart's Secret: %+v", c.Env)
	}
	if d.Spec.Template.Annotations["checksum/config"] == "" {
		t.Error("no checksum/config annotation: a config change would not roll the pods")
	}
	if got := pod.ServiceAccountName; got != r.serviceAccount.Name {
		t.Errorf("serviceAccountName %q, want %q", got, r.serviceAccount.Name)
	}
	if r.service.Spec.Selector["app.kubernetes.io/name"] != d.Spec.Selector.MatchLabels["app.kubernetes.io/name"] {
		t.Error("the Service does not select the Deployment's pods")
	}
}

// checkConfig: the ConfigMap holds a file tileproxy check accepts, whose
// drain timing fits in the pod's grace period.
func checkConfig(t *testing.T, r *rendered) {
	t.Helper()
	file, ok := r.configMap.Data["tileproxy.yaml"]
	if !ok {
		t.Fatal("ConfigMap has no tileproxy.yaml")
	}
	secret := strings.Repeat("s", 32)
	cfg, err := config.Parse([]byte(file), func(k string) (string, bool) {
		return secret, k == "TILEPROXY_HMAC_SECRET"
	})
	if err != nil {
		t.Fatalf("config: %v\n%s", err, file)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config does not validate: %v\n%s", err, file)
	}
	grace := time.Duration(*r.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	if need := cfg.DrainDelay.Duration() + cfg.ShutdownTimeout.Duration(); grace <= need {
		t.Errorf("terminationGracePeriodSeconds %v is not above drain_delay + shutdown_timeout = %v", grace, need)
	}
	if cfg.Listen != ":8080" || cfg.MetricsListen != fmt.Sprintf(":%d", r.service.Spec.Ports[1].Port) {
		t.Errorf("listeners %q %q do not match the Service", cfg.Listen, cfg.MetricsListen)
	}
}

func checkFull(t *testing.T, r *rendered) {
	t.Helper()
	if got := r.serviceAccount.Annotations["eks.amazonaws.com/role-arn"]; got != "arn:aws:iam::123456789012:role/tileproxy-runtime" {
		t.Errorf("IRSA annotation %q", got)
	}
	if r.hpa.Spec.MaxReplicas != 12 || r.deployment.Spec.Replicas != nil {
		t.Errorf("HPA max %d, Deployment replicas %v (want unset under an HPA)", r.hpa.Spec.MaxReplicas, r.deployment.Spec.Replicas)
	}
	if r.hpa.Spec.ScaleTargetRef.Name != r.deployment.Name {
		t.Errorf("HPA targets %q", r.hpa.Spec.ScaleTargetRef.Name)
	}
	if len(r.serviceMonitor.Spec.Endpoints) != 1 || r.serviceMonitor.Spec.Endpoints[0].Port != "metrics" {
		t.Errorf("ServiceMonitor endpoints %+v", r.serviceMonitor.Spec.Endpoints)
	}
	if len(r.networkPolicy.Spec.Ingress) != 2 {
		t.Errorf("NetworkPolicy ingress rules: %d, want tiles and metrics", len(r.networkPolicy.Spec.Ingress))
	}
	if got := *r.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds; got != 10+30+10 {
		t.Errorf("terminationGracePeriodSeconds %d, want 50", got)
	}
	checkTLS(t, r)
}

// checkTLS: with tls.secretName the Secret is mounted as a directory (a
// renewal reaches the pod), the configuration points at its files, and
// the probes speak https.
func checkTLS(t *testing.T, r *rendered) {
	t.Helper()
	pod := r.deployment.Spec.Template.Spec
	var mounted string
	for _, v := range pod.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "tiles-tls" {
			for _, m := range pod.Containers[0].VolumeMounts {
				if m.Name == v.Name && m.SubPath == "" {
					mounted = m.MountPath
				}
			}
		}
	}
	if mounted == "" {
		t.Fatalf("the TLS Secret is not mounted as a directory: %+v", pod.Volumes)
	}
	cfg, err := config.Parse([]byte(r.configMap.Data["tileproxy.yaml"]), func(string) (string, bool) { return strings.Repeat("s", 32), true })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS.CertFile != mounted+"/tls.crt" || cfg.TLS.KeyFile != mounted+"/tls.key" || cfg.TLS.MinVersion != "1.3" {
		t.Errorf("tls in the configuration: %+v, the Secret at %s", cfg.TLS, mounted)
	}
	c := pod.Containers[0]
	if c.LivenessProbe.HTTPGet.Scheme != "HTTPS" || c.ReadinessProbe.HTTPGet.Scheme != "HTTPS" {
		t.Errorf("probes over %q and %q, want HTTPS", c.LivenessProbe.HTTPGet.Scheme, c.ReadinessProbe.HTTPGet.Scheme)
	}
}
