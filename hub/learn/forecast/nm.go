package forecast

import "math"

// nelderMead minimises f from x0 with the classic simplex rules (reflection 1, expansion 2, contraction
// 0.5, shrink 0.5), the method R's optim uses for ets. f returns +Inf outside the feasible region, which
// the simplex then avoids. It stops when the spread of the simplex's values falls below reltol relative to
// the best value (R's optim default, sqrt of the machine epsilon) or after maxEval evaluations.
func nelderMead(f func([]float64) float64, x0, step []float64, reltol float64, maxEval int) ([]float64, float64) {
	n := len(x0)
	pts := make([][]float64, n+1)
	vals := make([]float64, n+1)
	for i := range pts {
		pts[i] = append([]float64(nil), x0...)
		if i > 0 {
			pts[i][i-1] += step[i-1]
		}
		vals[i] = f(pts[i])
	}
	evals := n + 1
	centroid := make([]float64, n)
	xr := make([]float64, n)
	xe := make([]float64, n)
	xc := make([]float64, n)
	for evals < maxEval {
		// Order: best first, worst last (insertion sort: n is tiny).
		for i := 1; i <= n; i++ {
			for j := i; j > 0 && vals[j] < vals[j-1]; j-- {
				vals[j], vals[j-1] = vals[j-1], vals[j]
				pts[j], pts[j-1] = pts[j-1], pts[j]
			}
		}
		if math.Abs(vals[n]-vals[0]) <= reltol*(math.Abs(vals[0])+reltol) {
			break
		}
		for k := range centroid {
			centroid[k] = 0
			for i := 0; i < n; i++ {
				centroid[k] += pts[i][k]
			}
			centroid[k] /= float64(n)
		}
		worst := pts[n]
		for k := range xr {
			xr[k] = centroid[k] + (centroid[k] - worst[k])
		}
		fr := f(xr)
		evals++
		switch {
		case fr < vals[0]:
			for k := range xe {
				xe[k] = centroid[k] + 2*(centroid[k]-worst[k])
			}
			fe := f(xe)
			evals++
			if fe < fr {
				copy(worst, xe)
				vals[n] = fe
			} else {
				copy(worst, xr)
				vals[n] = fr
			}
		case fr < vals[n-1]:
			copy(worst, xr)
			vals[n] = fr
		default:
			// Contract towards the better of the worst point and its reflection.
			if fr < vals[n] {
				for k := range xc {
					xc[k] = centroid[k] + 0.5*(xr[k]-centroid[k])
				}
			} else {
				for k := range xc {
					xc[k] = centroid[k] + 0.5*(worst[k]-centroid[k])
				}
			}
			fc := f(xc)
			evals++
			if fc < math.Min(fr, vals[n]) {
				copy(worst, xc)
				vals[n] = fc
				continue
			}
			for i := 1; i <= n; i++ {
				for k := range pts[i] {
					pts[i][k] = pts[0][k] + 0.5*(pts[i][k]-pts[0][k])
				}
				vals[i] = f(pts[i])
				evals++
			}
		}
	}
	best := 0
	for i := range vals {
		if vals[i] < vals[best] {
			best = i
		}
	}
	return pts[best], vals[best]
}
