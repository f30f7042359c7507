package recovery_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/lockdown/lockdown/services/containment/internal/recovery"
)

// TestCheckFingerprints pins the holders' keys: a swapped key file is
// refused, every mismatch named.
func TestCheckFingerprints(t *testing.T) {
	var keys, fps []string
	for i := range 3 {
		e, err := openpgp.NewEntity(fmt.Sprintf("holder %d", i), "", "h@example.com", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := e.Serialize(&b); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, base64.StdEncoding.EncodeToString(b.Bytes()))
		fps = append(fps, fmt.Sprintf("%X", e.PrimaryKey.Fingerprint)) // upper case, as gpg prints it
	}
	t.Run("the pinned keys pass, whatever the case", func(t *testing.T) {
		if err := recovery.CheckFingerprints(keys, fps); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("two swapped key files are both named", func(t *testing.T) {
		swapped := []string{keys[1], keys[0], keys[2]}
		err := recovery.CheckFingerprints(swapped, fps)
		if !errors.Is(err, recovery.ErrFingerprintMismatch) || !strings.Contains(err.Error(), "share 1") || !strings.Contains(err.Error(), "share 2") || strings.Contains(err.Error(), "share 3") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("a missing pin is refused", func(t *testing.T) {
		if err := recovery.CheckFingerprints(keys, fps[:2]); !errors.Is(err, recovery.ErrFingerprintMismatch) {
			t.Fatalf("got %v", err)
		}
	})
}
