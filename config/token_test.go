package config

import "testing"

func TestTokenEqual(t *testing.T) {
	for _, c := range []struct {
		got, want string
		eq        bool
	}{{"s3cret", "s3cret", true}, {"s3cre", "s3cret", false}, {"s3cret-longer", "s3cret", false}, {"s3creT", "s3cret", false}, {"", "", true}} {
		if TokenEqual(c.got, c.want) != c.eq {
			t.Errorf("TokenEqual(%q, %q) = %v", c.got, c.want, !c.eq)
		}
	}
}
