# Generates series.csv, the reference demand series (daily units, oldest first). Run once; the output is
# committed, so reference.R and the Go tests read the same numbers. R's default RNG makes it reproducible:
#   Rscript gen_series.R > series.csv
set.seed(20261204)
n <- 180
t <- seq_len(n)
series <- list(
  # steady seller around 40 units a day
  smooth = rpois(n, 40),
  # growing demand whose growth is levelling off
  trend = round(pmax(0, 10 + 30 * (1 - exp(-t / 90)) + rnorm(n, 0, 3))),
  # weekly pattern (none of the methods models it: they must still forecast the level)
  weekly = rpois(n, 20 * (1 + 0.4 * sin(2 * pi * t / 7))),
  # slow mover: a demand on about 30 % of days, a few units each
  intermittent = rbinom(n, 1, 0.3) * (1 + rpois(n, 2)),
  # lumpy: rare, large and variable orders
  lumpy = rbinom(n, 1, 0.08) * round(1 + rgamma(n, shape = 0.8, scale = 25)),
  # new product: no sales for 40 days, then a steady low demand with zeros
  launch = c(rep(0, 40), rpois(n - 40, 3))
)
cat("series,t,value\n")
for (name in names(series)) {
  y <- series[[name]]
  cat(sprintf("%s,%d,%d\n", name, seq_along(y), as.integer(y)), sep = "")
}
