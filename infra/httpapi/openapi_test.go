package httpapi

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

type openapiDoc struct {
	OpenAPI    string                          `yaml:"openapi"`
	Paths      map[string]map[string]yaml.Node `yaml:"paths"`
	Components map[string]map[string]yaml.Node `yaml:"components"`
	Security   []map[string][]string           `yaml:"security"`
	Other      map[string]any                  `yaml:",inline"`
}

var echoParam = regexp.MustCompile(`:([A-Za-z_][A-Za-z0-9_]*)`)

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	e := newEnv(t)
	var doc openapiDoc
	if err := yaml.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.yaml does not parse: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.0") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		for m := range item {
			if slices.Contains(httpMethods, m) {
				documented[strings.ToUpper(m)+" "+path] = true
			}
		}
	}
	registered := map[string]bool{}
	for _, r := range e.srv.Routes() {
		registered[r.Method+" "+echoParam.ReplaceAllString(r.Path, "{$1}")] = true
	}
	for k := range registered {
		if !documented[k] {
			t.Errorf("route %s is not documented in openapi.yaml", k)
		}
	}
	for k := range documented {
		if !registered[k] {
			t.Errorf("openapi.yaml documents %s, which is not registered", k)
		}
	}
	if len(registered) < 16 {
		t.Errorf("only %d routes registered", len(registered))
	}
}

// TestOpenAPIRefsResolve checks every $ref points at a defined component,
// and the security scheme and error shape are there.
func TestOpenAPIRefsResolve(t *testing.T) {
	var root map[string]any
	if err := yaml.Unmarshal(OpenAPI(), &root); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if k == "$ref" {
					ref, _ := x.(string)
					if !resolves(root, ref) {
						t.Errorf("$ref %q does not resolve", ref)
					}
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(root)
	if !resolves(root, "#/components/securitySchemes/bearerAuth") {
		t.Error("no bearerAuth security scheme")
	}
	for _, p := range []string{"#/components/schemas/Error", "#/components/schemas/Batch", "#/components/schemas/Coupon",
		"#/components/schemas/ClaimedCoupon", "#/components/schemas/IssueBatchRequest"} {
		if !resolves(root, p) {
			t.Errorf("%s missing", p)
		}
	}
	// Every operation answers its errors with the Error schema: each
	// documents 401 unless it is public, and 500.
	paths := root["paths"].(map[string]any)
	for path, item := range paths {
		for m, op := range item.(map[string]any) {
			if !slices.Contains(httpMethods, m) {
				continue
			}
			o := op.(map[string]any)
			responses := o["responses"].(map[string]any)
			public := false
			if sec, ok := o["security"].([]any); ok && len(sec) == 0 {
				public = true
			}
			if !public {
				for _, code := range []string{"401", "403", "500"} {
					if _, ok := responses[code]; !ok {
						t.Errorf("%s %s does not document %s", m, path, code)
					}
				}
			}
			if m == "post" && !public {
				if _, ok := responses["400"]; !ok {
					t.Errorf("%s %s does not document 400", m, path)
				}
				if _, ok := responses["413"]; !ok {
					t.Errorf("%s %s does not document 413", m, path)
				}
			}
		}
	}
}

func resolves(root map[string]any, ref string) bool {
	if !strings.HasPrefix(ref, "#/") {
		return false
	}
	var cur any = root
	for _, part := range strings.Split(ref[2:], "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[part]; !ok {
			return false
		}
	}
	return true
}

func TestOpenAPIServedMatchesEmbedded(t *testing.T) {
	e := newEnv(t)
	r := e.get("/openapi.yaml", "")
	expectStatus(t, r, http.StatusOK)
	disk, err := os.ReadFile(filepath.Join(".", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Body) != string(disk) {
		t.Fatal("served document differs from openapi.yaml")
	}
}
