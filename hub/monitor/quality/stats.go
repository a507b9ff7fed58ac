package quality

import (
	"math"
	"slices"
	"sort"
)

// psi is the population stability index of counts act against ref over the same bins:
// Σ (a − e) · ln(a / e) over the bins' shares, each share smoothed by half a count so that an
// empty bin does not make it infinite.
func psi(ref, act []float64) float64 {
	var nr, na float64
	for i := range ref {
		nr += ref[i]
		na += act[i]
	}
	if nr == 0 || na == 0 {
		return math.NaN()
	}
	b := float64(len(ref))
	var s float64
	for i := range ref {
		e := (ref[i] + 0.5) / (nr + 0.5*b)
		a := (act[i] + 0.5) / (na + 0.5*b)
		s += (a - e) * math.Log(a/e)
	}
	return s
}

// binsOf counts xs into the bins below, between and above edges (ascending).
func binsOf(xs []float64, edges []float64) []float64 {
	out := make([]float64, len(edges)+1)
	for _, x := range xs {
		out[sort.SearchFloat64s(edges, x)]++ // x == edge goes to the bin below it
	}
	return out
}

// quantileEdges are the inner edges of bins equal-frequency in sorted xs (duplicates removed, so
// a constant reference gives fewer bins).
func quantileEdges(sorted []float64, bins int) []float64 {
	var edges []float64
	for i := 1; i < bins; i++ {
		e := sorted[min(len(sorted)-1, i*len(sorted)/bins)]
		if len(edges) == 0 || e > edges[len(edges)-1] {
			edges = append(edges, e)
		}
	}
	return edges
}

// ks is the two-sample Kolmogorov-Smirnov statistic D of a and b (sorted in place) and its
// asymptotic p-value (Numerical Recipes' kstwo: Q_KS((√n_e + 0.12 + 0.11/√n_e)·D)).
func ks(a, b []float64) (d, p float64) {
	if len(a) == 0 || len(b) == 0 {
		return math.NaN(), math.NaN()
	}
	slices.Sort(a)
	slices.Sort(b)
	na, nb := float64(len(a)), float64(len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		x := min(a[i], b[j])
		for i < len(a) && a[i] <= x {
			i++
		}
		for j < len(b) && b[j] <= x {
			j++
		}
		d = max(d, math.Abs(float64(i)/na-float64(j)/nb))
	}
	en := math.Sqrt(na * nb / (na + nb))
	return d, qks((en + 0.12 + 0.11/en) * d)
}

// qks is the Kolmogorov distribution's tail Q(λ) = 2 Σ (−1)^(k−1) exp(−2k²λ²).
func qks(l float64) float64 {
	if l < 0.2 {
		return 1
	}
	var sum, prev float64
	sign := 2.0
	for k := 1; k <= 100; k++ {
		t := sign * math.Exp(-2*float64(k*k)*l*l)
		sum += t
		if math.Abs(t) <= 1e-10*math.Abs(sum) || math.Abs(t) <= 1e-12*prev {
			return min(max(sum, 0), 1)
		}
		sign = -sign
		prev = math.Abs(t)
	}
	return 1 // not converged: no evidence either way
}

// mix64 is SplitMix64's finaliser: a deterministic hash, so every replica keeps the same reservoir.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// hashString is FNV-1a.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
