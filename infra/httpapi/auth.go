package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	echojwt "github.com/labstack/echo-jwt/v4"
	"github.com/labstack/echo/v4"

	"github.com/couponsd/couponsd/domain"
)

// Roles carried by the "role" claim.
const (
	RoleUser    = "user"    // a shopper: acts only on itself
	RoleAdmin   = "admin"   // back office
	RoleService = "service" // the order system
)

// Roles lists the valid roles.
var Roles = []string{RoleUser, RoleAdmin, RoleService}

// Principal is the authenticated caller.
type Principal struct {
	Subject string // the "sub" claim (the user id for role user)
	Role    string
}

// principalKey is where the auth middleware stores the Principal.
const principalKey = "couponsd.principal"

// PrincipalOf returns the caller authenticated by the Auth middleware.
func PrincipalOf(c echo.Context) (Principal, bool) {
	p, ok := c.Get(principalKey).(Principal)
	return p, ok
}

// tokenClaims are the claims of a couponsd bearer token.
type tokenClaims struct {
	Role string `json:"role"`
	jwt.RegisteredClaims
}

// IssueToken signs an HS256 token for sub with role, valid for ttl from now.
func IssueToken(secret []byte, sub, role string, ttl time.Duration, now time.Time) (string, error) {
	if len(secret) < MinJWTSecretLen {
		return "", fmt.Errorf("httpapi: the JWT secret must be at least %d bytes", MinJWTSecretLen)
	}
	if err := domain.ValidateID("sub", sub); err != nil {
		return "", err
	}
	if !slices.Contains(Roles, role) {
		return "", domain.Invalid("role", "must be one of %s", strings.Join(Roles, ", "))
	}
	if ttl <= 0 {
		return "", domain.Invalid("ttl", "must be positive")
	}
	claims := tokenClaims{Role: role, RegisteredClaims: jwt.RegisteredClaims{
		Subject:   sub,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}

func unauthenticated(format string, args ...any) error {
	return domain.Errorf(ErrUnauthenticated, format, args...)
}

// authMiddleware authenticates "Authorization: Bearer <JWT>": HS256 only,
// exp required, sub and role checked. Every failure is a 401 with our body.
func (s *Server) authMiddleware() (echo.MiddlewareFunc, error) {
	secret := s.cfg.JWTSecret
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithStrictDecoding(), // one spelling per token: base64 padding bits must be zero
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(s.clock.Now),
	)
	keyFunc := func(t *jwt.Token) (any, error) {
		if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok || t.Method.Alg() != jwt.SigningMethodHS256.Alg() {
			return nil, fmt.Errorf("%w: signing method %v", jwt.ErrTokenSignatureInvalid, t.Header["alg"])
		}
		return secret, nil
	}
	return echojwt.Config{
		ContextKey: principalKey,
		ParseTokenFunc: func(_ echo.Context, auth string) (any, error) {
			var cl tokenClaims
			if _, err := parser.ParseWithClaims(auth, &cl, keyFunc); err != nil {
				return nil, err
			}
			if cl.Subject == "" {
				return nil, unauthenticated("token has no sub claim")
			}
			if err := domain.ValidateID("sub", cl.Subject); err != nil {
				return nil, unauthenticated("token sub claim is invalid")
			}
			if !slices.Contains(Roles, cl.Role) {
				return nil, unauthenticated("token role claim must be one of %s", strings.Join(Roles, ", "))
			}
			return Principal{Subject: cl.Subject, Role: cl.Role}, nil
		},
		ErrorHandler: func(_ echo.Context, err error) error {
			return tokenError(err)
		},
	}.ToMiddleware()
}

// tokenError turns a token lookup or parse failure into a 401 error.
func tokenError(err error) error {
	var de *domain.Error
	var te *echojwt.TokenExtractionError
	switch {
	case errors.As(err, &de) && errors.Is(de, ErrUnauthenticated):
		return de
	case err == nil || errors.As(err, &te):
		return unauthenticated("missing bearer token (Authorization: Bearer <JWT>)")
	case errors.Is(err, jwt.ErrTokenMalformed):
		return unauthenticated("token is malformed")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return unauthenticated("token signature is invalid (HS256 only)")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return unauthenticated("token has no exp claim")
	case errors.Is(err, jwt.ErrTokenExpired):
		return unauthenticated("token is expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return unauthenticated("token is not valid yet")
	default:
		return unauthenticated("token is invalid")
	}
}

// requireRole admits callers holding one of roles (403 otherwise). It must
// run after the auth middleware.
func requireRole(roles ...string) echo.MiddlewareFunc {
	need := strings.Join(roles, " or ")
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			p, ok := PrincipalOf(c)
			if !ok {
				return unauthenticated("authentication required")
			}
			if !slices.Contains(roles, p.Role) {
				return domain.Errorf(domain.ErrForbidden, "role %s may not call %s %s (needs %s)", p.Role, c.Request().Method, c.Path(), need)
			}
			return next(c)
		}
	}
}

// SecretFileName is the file LoadOrCreateSecret keeps the key in.
const SecretFileName = "jwt.secret"

// LoadOrCreateSecret returns the HS256 key kept in <dataDir>/jwt.secret (hex,
// mode 0600), creating a random 32-byte key on first use. It is for embedded
// mode, where COUPONS_JWT_SECRET is not set.
func LoadOrCreateSecret(dataDir string) ([]byte, error) {
	if dataDir == "" {
		return nil, errors.New("httpapi: LoadOrCreateSecret needs a data dir")
	}
	path := filepath.Join(dataDir, SecretFileName)
	if key, err := readSecret(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("httpapi: create data dir: %w", err)
	}
	key := make([]byte, MinJWTSecretLen)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(dataDir, SecretFileName+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("httpapi: write %s: %w", path, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := tmp.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		_ = tmp.Close()
		return nil, err
	}
	_, werr := tmp.WriteString(hex.EncodeToString(key) + "\n")
	serr := tmp.Sync()
	if cerr := tmp.Close(); werr == nil && serr == nil {
		werr = cerr
	}
	if err := errors.Join(werr, serr); err != nil {
		return nil, fmt.Errorf("httpapi: write %s: %w", path, err)
	}
	// Link never replaces: when two processes race, the first key wins and
	// both use it.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readSecret(path)
		}
		// No hard links on this file system: create the file exclusively.
		return createSecretExcl(path, key)
	}
	return key, nil
}

func createSecretExcl(path string, key []byte) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return readSecret(path)
	}
	if err != nil {
		return nil, fmt.Errorf("httpapi: write %s: %w", path, err)
	}
	_, werr := f.WriteString(hex.EncodeToString(key) + "\n")
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("httpapi: write %s: %w", path, err)
	}
	return key, nil
}

func readSecret(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("httpapi: %s is accessible by other users (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(key) < MinJWTSecretLen {
		return nil, fmt.Errorf("httpapi: %s does not hold a hex key of at least %d bytes", path, MinJWTSecretLen)
	}
	return key, nil
}
