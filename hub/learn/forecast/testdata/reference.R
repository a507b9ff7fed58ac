# Fits R's forecast package to every series in series.csv and writes R's parameters and forecasts, the
# fixtures the Go tests compare against:
#   Rscript reference.R [outdir]       (default: the directory of this script)
# Writes r_params.csv (series, method, param, value) and r_forecasts.csv (series, method, h, mean, lo80,
# hi80, lo95, hi95; NA where the method has no interval). Numbers are printed with 10 significant digits.
suppressPackageStartupMessages(library(forecast))
args <- commandArgs(trailingOnly = TRUE)
here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE))))
out <- if (length(args) >= 1) args[1] else here
h <- 14
d <- read.csv(file.path(here, "series.csv"), stringsAsFactors = FALSE)
num <- function(x) ifelse(is.na(x), "NA", sprintf("%.10g", x))
params <- character()
fcs <- character()
for (name in unique(d$series)) {
  y <- ts(d$value[d$series == name][order(d$t[d$series == name])])
  add_fc <- function(method, f) {
    lo <- if (is.null(f$lower)) matrix(NA, h, 2) else f$lower
    hi <- if (is.null(f$upper)) matrix(NA, h, 2) else f$upper
    fcs <<- c(fcs, sprintf("%s,%s,%d,%s,%s,%s,%s,%s", name, method, seq_len(h), num(as.numeric(f$mean)),
      num(lo[, 1]), num(hi[, 1]), num(lo[, 2]), num(hi[, 2])))
  }
  add_par <- function(method, p) {
    params <<- c(params, sprintf("%s,%s,%s,%s", name, method, names(p), num(unname(p))))
  }
  # ses: ets(y, "ANN", opt.crit = "mse"), alpha and l0 estimated.
  f <- ses(y, h = h, level = c(80, 95))
  add_par("ses", c(f$model$par, sigma2 = f$model$sigma2, mse = f$model$mse))
  add_fc("ses", f)
  # holt(damped = TRUE): ets(y, "AAN", damped = TRUE, opt.crit = "mse"), alpha, beta, phi, l0, b0 estimated.
  f <- holt(y, h = h, damped = TRUE, level = c(80, 95))
  add_par("holt_damped", c(f$model$par, sigma2 = f$model$sigma2, mse = f$model$mse))
  add_fc("holt_damped", f)
  # croston: alpha fixed at 0.1 (R's default), no interval.
  f <- croston(y, h = h)
  add_par("croston", c(alpha = 0.1))
  add_fc("croston", f)
}
writeLines(c("series,method,param,value", params), file.path(out, "r_params.csv"))
writeLines(c("series,method,h,mean,lo80,hi80,lo95,hi95", fcs), file.path(out, "r_forecasts.csv"))
