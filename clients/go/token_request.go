package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

type tokenResponse struct {
	AccessToken string   `json:"access_token"`
	TokenType   string   `json:"token_type"`
	ExpiresIn   *float64 `json:"expires_in"`
	Error       string   `json:"error"`
}

// request does one POST /token with client. An OAuth error answer is a *TokenError carrying authz's
// Retry-After; a failure to reach authz wraps ErrIssuerUnreachable and the cause.
func (ts *TokenSource) request(client *http.Client, audience string, scopes []string) (token string, lifetime time.Duration, err error) {
	body := map[string]string{"grant_type": "client_credentials", "audience": audience}
	if len(scopes) > 0 {
		body["scope"] = strings.Join(scopes, " ")
	}
	payload, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(ts.ctx, ts.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.url, bytes.NewReader(payload))
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	res, err := client.Do(req)
	if err != nil {
		if ts.ctx.Err() != nil {
			return "", 0, ErrClosed
		}
		return "", 0, fmt.Errorf("%w: %w", ErrIssuerUnreachable, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if err != nil {
		return "", 0, fmt.Errorf("%w: %w", ErrIssuerUnreachable, err)
	}
	var tr tokenResponse
	if json.Unmarshal(raw, &tr) != nil {
		return "", 0, fmt.Errorf("%w: %d with a body that is not JSON", ErrBadTokenResponse, res.StatusCode)
	}
	if res.StatusCode != http.StatusOK {
		if tr.Error == "" {
			return "", 0, fmt.Errorf("%w: %d without an OAuth error", ErrBadTokenResponse, res.StatusCode)
		}
		te := &TokenError{Code: tr.Error, Status: res.StatusCode, Audience: audience}
		if secs, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && secs > 0 && secs <= 3600 {
			te.RetryAfter = time.Duration(secs) * time.Second
		}
		return "", 0, te
	}
	if !looksLikeJWT(tr.AccessToken) || tr.ExpiresIn == nil || !(*tr.ExpiresIn >= 1 && *tr.ExpiresIn <= 86400) {
		return "", 0, fmt.Errorf("%w: 200 without a usable access_token/expires_in", ErrBadTokenResponse)
	}
	return tr.AccessToken, time.Duration(*tr.ExpiresIn * float64(time.Second)), nil
}

func looksLikeJWT(s string) bool {
	if len(s) == 0 || len(s) > MaxTokenBytes || strings.Count(s, ".") != 2 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '.' || c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}
