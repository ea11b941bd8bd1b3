# Writes proc_reference.json: pROC's DeLong figures on fixed datasets with heavy ties,
# which tests/test_stats_delong.py compares against. CI never runs R; rerun this by hand
# (Debian: apt-get install r-cran-proc) from tests/data/:  Rscript proc_reference.R
suppressMessages(library(pROC))
set.seed(20140101)

num <- function(x) paste0("[", paste(sprintf("%.17g", x), collapse = ", "), "]")
field <- function(name, value) sprintf('"%s": %s', name, value)
obj <- function(...) paste0("{", paste(c(...), collapse = ", "), "}")

fit <- function(y, s) roc(response = y, predictor = s, levels = c(0, 1), direction = "<", quiet = TRUE)

paired_case <- function(name, y, s1, s2, level) {
  r1 <- fit(y, s1); r2 <- fit(y, s2)
  ci1 <- ci.auc(r1, conf.level = level, method = "delong")
  ci2 <- ci.auc(r2, conf.level = level, method = "delong")
  t <- roc.test(r1, r2, paired = TRUE, method = "delong", conf.level = level)
  obj(field("name", sprintf('"%s"', name)), field("level", num(level)),
      field("y", num(y)), field("scores", paste0("[", num(s1), ", ", num(s2), "]")),
      field("auc", num(c(auc(r1), auc(r2)))),
      field("var", num(c(var(r1, method = "delong"), var(r2, method = "delong")))),
      field("cov", num(cov(r1, r2, method = "delong"))),
      field("ci", paste0("[", num(c(ci1[1], ci1[3])), ", ", num(c(ci2[1], ci2[3])), "]")),
      field("z", num(t$statistic)), field("p_value", num(t$p.value)),
      field("diff_ci", num(as.numeric(t$conf.int))))
}

unpaired_case <- function(name, y1, s1, y2, s2) {
  t <- roc.test(fit(y1, s1), fit(y2, s2), paired = FALSE, method = "delong")
  obj(field("name", sprintf('"%s"', name)), field("y1", num(y1)), field("s1", num(s1)),
      field("y2", num(y2)), field("s2", num(s2)), field("z", num(t$statistic)),
      field("df", num(t$parameter)), field("p_value", num(t$p.value)))
}

# 1: small, 5-point ratings (ties everywhere)
y_a <- rep(c(0, 1), c(22, 18))
a1 <- pmin(5, pmax(1, round(2.5 + 1.2 * y_a + rnorm(40))))
a2 <- pmin(5, pmax(1, round(2.8 + 0.6 * y_a + rnorm(40))))
# 2: larger, correlated models, scores rounded to 2 decimals, 15% positive
y_b <- as.numeric(runif(300) < 0.15)
base <- rnorm(300) + 1.0 * y_b
b1 <- round(plogis(base + 0.5 * rnorm(300)), 2)
b2 <- round(plogis(0.6 * base + 0.8 * rnorm(300)), 2)
# 3: one model worse than chance (direction is never flipped), other with large ties
y_c <- rep(c(1, 0), c(25, 35))
c1 <- round(-0.4 * y_c + rnorm(60), 1)
c2 <- as.numeric(rnorm(60) + y_c > 0.5)

out <- obj(
  field("generator", sprintf('"pROC %s, %s"', packageVersion("pROC"), R.version.string)),
  field("paired", paste0("[", paste(
    paired_case("ratings", y_a, a1, a2, 0.95),
    paired_case("rounded", y_b, b1, b2, 0.95),
    paired_case("below_chance", y_c, c1, c2, 0.90), sep = ", "), "]")),
  field("unpaired", paste0("[", paste(
    unpaired_case("ratings_vs_rounded", y_a, a1, y_b, b1),
    unpaired_case("rounded_vs_below_chance", y_b, b2, y_c, c2), sep = ", "), "]")))
writeLines(out, "proc_reference.json")
