// Package dkimdns publishes and reads DKIM records on an authoritative DNS
// server: RFC 2136 dynamic updates signed with a TSIG key (RFC 8945), and
// plain queries that follow a tenant's CNAME delegation to the record. The
// rotator publishes through it; the local stack and the tests read through
// it. A DKIM record is a TXT record whose value may be longer than one
// character-string (255 octets): it is split on write and joined on read
// (RFC 6376 §3.6.2.2).
package dkimdns

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ErrBadKey is returned when a TSIG key cannot be parsed.
var ErrBadKey = errors.New("dkimdns: TSIG key must be <algorithm>:<name>:<base64 secret>")

// ErrRefused is returned when the server answers an update or a query with
// an error code (REFUSED, NOTAUTH, SERVFAIL…): a key without the right, a
// zone the server does not serve, or a server in trouble.
var ErrRefused = errors.New("dkimdns: the DNS server refused")

// ErrNeverSucceeds is returned (with ErrRefused) for an answer that no
// retry can change: REFUSED, NOTAUTH, NOTZONE, FORMERR or NOTIMP — a key
// without the right, a name outside the server's zones (a tenant's
// delegation pointing elsewhere), a request the server will not take.
// SERVFAIL is a server in trouble: retried.
var ErrNeverSucceeds = errors.New("dkimdns: the answer will not change on retry")

// refusal is the error for a non-success answer to op on name.
func refusal(op, name string, rcode int) error {
	switch rcode {
	case dns.RcodeRefused, dns.RcodeNotAuth, dns.RcodeNotZone, dns.RcodeFormatError, dns.RcodeNotImplemented:
		return fmt.Errorf("%w: %s %s: %s (%w)", ErrRefused, op, name, dns.RcodeToString[rcode], ErrNeverSucceeds)
	}
	return fmt.Errorf("%w: %s %s: %s", ErrRefused, op, name, dns.RcodeToString[rcode])
}

// ErrLoop is returned when a name's CNAME chain is longer than MaxChain.
var ErrLoop = errors.New("dkimdns: CNAME chain too long")

// MaxChain bounds the CNAMEs followed from a name to its record.
const MaxChain = 8

// RevokedRecord is the value that revokes a selector: an empty public key
// (RFC 6376 §3.6.1), so a verifier rejects any signature under it.
const RevokedRecord = "v=DKIM1; p="

// Key is a TSIG key. Secret is base64, as servers configure it; it is a
// credential and never printed (String hides it).
type Key struct {
	Algorithm string // hmac-sha256 (default), hmac-sha512…
	Name      string
	Secret    string
}

// String names the key without its secret.
func (k Key) String() string { return k.Algorithm + ":" + k.Name }

// ParseKey reads "<algorithm>:<name>:<base64 secret>" (knsupdate's -y
// form); "<name>:<secret>" means hmac-sha256.
func ParseKey(s string) (Key, error) {
	parts := strings.Split(strings.TrimSpace(s), ":")
	var k Key
	switch len(parts) {
	case 2:
		k = Key{Algorithm: "hmac-sha256", Name: parts[0], Secret: parts[1]}
	case 3:
		k = Key{Algorithm: strings.ToLower(parts[0]), Name: parts[1], Secret: parts[2]}
	default:
		return Key{}, ErrBadKey
	}
	if k.Name == "" {
		return Key{}, ErrBadKey
	}
	if _, err := base64.StdEncoding.DecodeString(k.Secret); err != nil || k.Secret == "" {
		return Key{}, ErrBadKey
	}
	if _, ok := algorithms[k.Algorithm]; !ok {
		return Key{}, fmt.Errorf("%w (algorithm %q is not one of hmac-sha256, hmac-sha384, hmac-sha512)", ErrBadKey, k.Algorithm)
	}
	return k, nil
}

// LoadKey reads a key file holding one key in ParseKey's form.
func LoadKey(path string) (Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("dkimdns: %w", err)
	}
	return ParseKey(string(b))
}

var algorithms = map[string]string{
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// Client talks to one authoritative server.
type Client struct {
	// Server is host:port of the authoritative server.
	Server string
	// Key signs updates (queries are not signed).
	Key Key
	// Timeout bounds one exchange. Default 5s.
	Timeout time.Duration
}

func (c *Client) client() *dns.Client { return c.over("tcp") }

// over is a client on the given transport: updates go over TCP (no
// retransmission guesswork for a change), queries over UDP with EDNS0 and
// fall back to TCP when the answer is truncated.
func (c *Client) over(network string) *dns.Client {
	t := c.Timeout
	if t <= 0 {
		t = 5 * time.Second
	}
	cl := &dns.Client{Net: network, Timeout: t}
	if c.Key.Name != "" {
		cl.TsigSecret = map[string]string{dns.Fqdn(c.Key.Name): c.Key.Secret}
	}
	return cl
}

// Replace makes rrs the only records of their type at name in zone, in one
// atomic update: the RRset is deleted and the new records inserted in the
// same message, so a resolver sees the old set or the new one, never none.
func (c *Client) Replace(ctx context.Context, zone, name string, rrtype uint16, rrs ...dns.RR) error {
	return c.ReplaceSets(ctx, zone, []RRSet{{Name: name, Type: rrtype, Records: rrs}})
}

// update sends an update message (TSIG-signed with the client's key);
// what names it in errors.
func (c *Client) update(ctx context.Context, m *dns.Msg, what string) error {
	if c.Key.Name != "" {
		m.SetTsig(dns.Fqdn(c.Key.Name), algorithms[c.Key.Algorithm], 300, time.Now().Unix())
	}
	r, _, err := c.client().ExchangeContext(ctx, m, c.Server)
	// A refusal may come unsigned (the server's answer to a key it does not
	// accept): its code says more than the failed signature check.
	if r != nil && r.Rcode != dns.RcodeSuccess {
		return refusal("update", what, r.Rcode)
	}
	if err != nil {
		return fmt.Errorf("dkimdns: update %s at %s: %w", what, c.Server, err)
	}
	if r.Rcode != dns.RcodeSuccess {
		return refusal("update", what, r.Rcode)
	}
	return nil
}

// ReplaceTXT publishes value as the only TXT record at name.
func (c *Client) ReplaceTXT(ctx context.Context, zone, name, value string, ttl uint32) error {
	return c.Replace(ctx, zone, name, dns.TypeTXT, TXT(name, value, ttl))
}

// RRSet is the records one name is to hold of one type (none: the set is
// deleted) in a ReplaceSets update.
type RRSet struct {
	Name    string
	Type    uint16
	Records []dns.RR
}

// MaxSetsPerUpdate bounds the sets of one ReplaceSets message: a DKIM
// record of a 2048-bit key is about 420 octets, so 64 of them with their
// deletions stay well inside a DNS message over TCP (64 KiB).
const MaxSetsPerUpdate = 64

// ReplaceSets makes each set the only records of its type at its name,
// all in one atomic update (RFC 2136 applies every change of a message or
// none): the server commits its zone once for the lot instead of once per
// name. At most MaxSetsPerUpdate sets.
func (c *Client) ReplaceSets(ctx context.Context, zone string, sets []RRSet) error {
	if len(sets) > MaxSetsPerUpdate {
		return fmt.Errorf("dkimdns: %d record sets in one update, at most %d", len(sets), MaxSetsPerUpdate)
	}
	m := new(dns.Msg)
	m.SetUpdate(dns.Fqdn(zone))
	for _, set := range sets {
		m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: dns.Fqdn(set.Name), Rrtype: set.Type, Class: dns.ClassINET}}})
		if len(set.Records) > 0 {
			m.Insert(set.Records)
		}
	}
	what := fmt.Sprintf("%d record sets", len(sets))
	if len(sets) == 1 {
		what = sets[0].Name
	}
	return c.update(ctx, m, what)
}

// ReplaceEach sends sets in as few updates as it can (MaxSetsPerUpdate
// to a message) and returns each set's fate, in order. A message is
// atomic, so a refused one is sent again set by set: one bad set does not
// hold back the others, and each caller learns its own set's fate.
func (c *Client) ReplaceEach(ctx context.Context, zone string, sets []RRSet) []error {
	errs := make([]error, len(sets))
	for start := 0; start < len(sets); start += MaxSetsPerUpdate {
		end := min(start+MaxSetsPerUpdate, len(sets))
		err := c.ReplaceSets(ctx, zone, sets[start:end])
		if err == nil || end-start == 1 {
			for i := start; i < end; i++ {
				errs[i] = err
			}
			continue
		}
		for i := start; i < end; i++ {
			errs[i] = c.ReplaceSets(ctx, zone, sets[i:i+1])
		}
	}
	return errs
}

// TXT is a TXT record holding value, split into character-strings of at
// most 255 octets.
func TXT(name, value string, ttl uint32) *dns.TXT {
	var parts []string
	for len(value) > 255 {
		parts = append(parts, value[:255])
		value = value[255:]
	}
	parts = append(parts, value)
	return &dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: ttl}, Txt: parts}
}

// Lookup returns the TXT values at name as the server answers them (each
// record's strings joined), following CNAMEs the server hands back or that
// point into another of its zones, up to MaxChain. A name with no TXT
// record gives no values and no error.
func (c *Client) Lookup(ctx context.Context, name string) ([]string, error) {
	name = dns.Fqdn(name)
	for range MaxChain {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeTXT)
		m.RecursionDesired = false
		m.SetEdns0(4096, false)
		r, _, err := c.over("udp").ExchangeContext(ctx, m, c.Server)
		if err == nil && r.Truncated {
			r, _, err = c.client().ExchangeContext(ctx, m, c.Server)
		}
		if err != nil {
			return nil, fmt.Errorf("dkimdns: query %s at %s: %w", name, c.Server, err)
		}
		if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
			return nil, refusal("query", name, r.Rcode)
		}
		var out []string
		next := ""
		// The answer may carry the chain in order (in-zone CNAMEs): walk it.
		for _, rr := range r.Answer {
			switch v := rr.(type) {
			case *dns.CNAME:
				if strings.EqualFold(v.Hdr.Name, name) || strings.EqualFold(v.Hdr.Name, next) {
					next = v.Target
				}
			case *dns.TXT:
				out = append(out, strings.Join(v.Txt, ""))
			}
		}
		if len(out) > 0 || next == "" {
			return out, nil
		}
		name = next
	}
	return nil, fmt.Errorf("%w: %s", ErrLoop, name)
}

// LookupFunc is Lookup bound to ctx, in the shape DKIM verifiers take.
func (c *Client) LookupFunc(ctx context.Context) func(name string) ([]string, error) {
	return func(name string) ([]string, error) { return c.Lookup(ctx, name) }
}

// Serial returns the SOA serial of zone: a readiness check, and how a test
// sees that an update landed.
func (c *Client) Serial(ctx context.Context, zone string) (uint32, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(zone), dns.TypeSOA)
	r, _, err := c.client().ExchangeContext(ctx, m, c.Server)
	if err != nil {
		return 0, fmt.Errorf("dkimdns: SOA %s at %s: %w", zone, c.Server, err)
	}
	for _, rr := range r.Answer {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa.Serial, nil
		}
	}
	return 0, fmt.Errorf("%w: no SOA for %s (%s)", ErrRefused, zone, dns.RcodeToString[r.Rcode])
}

// PublicKey returns the p= tag of a DKIM record ("" for a revoked key,
// ok false when the value is not a DKIM key record).
func PublicKey(record string) (p string, ok bool) {
	isDKIM := false
	for _, tag := range strings.Split(record, ";") {
		k, v, found := strings.Cut(strings.TrimSpace(tag), "=")
		if !found {
			continue
		}
		switch strings.TrimSpace(k) {
		case "v":
			isDKIM = strings.TrimSpace(v) == "DKIM1"
		case "p":
			// Whitespace inside p= is folding, not data (RFC 6376 §3.6.1).
			p, ok = strings.Join(strings.Fields(v), ""), true
		}
	}
	return p, ok && isDKIM
}
