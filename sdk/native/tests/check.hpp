// A tiny test harness (no framework): named checks, error statistics on float mismatches, a summary and the
// exit status ctest reads. Every tolerance is a named constant with its reason.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "minivlm/minivlm.h"

namespace check {

// The bound on every float output of a host step (python_ref computes in float32 too; the residue is
// exp/log implementations and summation order).
constexpr double kFloatTol = 1e-5;
// Box coordinates are in input pixels (up to image_size, e.g. 256 or 512), where one float32 ulp is already
// 3e-5 or 6e-5: they are compared relative to their magnitude, 1e-5 of max(1, |expected|) — a different expf
// (glibc here, SLEEF inside torch) moves a decoded box by at most an ulp or two.
constexpr double kCoordRelTol = 1e-5;
// A caption score is a sum of up to 20 float32 log-probabilities, each ~1e-6 from torch's.
constexpr double kScoreTol = 1e-4;

struct Stats {
  size_t count = 0, bad = 0, first_bad = 0;
  double max_abs = 0, sum_abs = 0, worst_expected = 0, worst_got = 0;
};

class Suite {
 public:
  explicit Suite(std::string name) : name_(std::move(name)) {}

  bool ok(bool condition, const std::string& what) {
    ++checks_;
    if (!condition) {
      ++failures_;
      std::printf("FAIL %s\n", what.c_str());
    }
    return condition;
  }

  bool status(mvlm_status s, const std::string& what) {
    return ok(s == MVLM_OK, what + " returned " + mvlm_status_name(s) + ": " + mvlm_last_error());
  }

  // |got - expected| <= tol * (relative ? max(1, |expected|) : 1) everywhere; NaN matches only NaN.
  bool close(const float* got, const float* expected, size_t n, double tol, const std::string& what,
             bool relative = false) {
    Stats s;
    for (size_t i = 0; i < n; ++i) {
      const double e = expected[i], g = got[i];
      const bool both_nan = std::isnan(e) && std::isnan(g);
      const double d = both_nan ? 0.0 : std::fabs(g - e);
      const double bound = tol * (relative ? std::max(1.0, std::fabs(e)) : 1.0);
      ++s.count;
      if (!both_nan && !(d <= bound)) {
        if (s.bad++ == 0) s.first_bad = i;
      }
      if (!(d <= s.max_abs)) {
        s.max_abs = d;
        s.worst_expected = e;
        s.worst_got = g;
      }
      s.sum_abs += std::isfinite(d) ? d : 0.0;
    }
    max_abs_seen_ = std::max(max_abs_seen_, s.max_abs);
    char buf[512];
    std::snprintf(buf, sizeof(buf), "%s: %zu of %zu values off by more than %g%s (first at %zu); max abs %.3g "
                  "(got %.9g, expected %.9g), mean abs %.3g", what.c_str(), s.bad, s.count, tol,
                  relative ? " x max(1, |expected|)" : "", s.first_bad, s.max_abs, s.worst_got, s.worst_expected,
                  s.count ? s.sum_abs / static_cast<double>(s.count) : 0.0);
    if (s.bad == 0) std::printf("ok   %s\n", buf);  // the error statistics of every float comparison
    return ok(s.bad == 0, buf);
  }

  template <typename T>
  bool equal(const std::vector<T>& got, const std::vector<T>& expected, const std::string& what) {
    if (got.size() != expected.size()) {
      return ok(false, what + ": " + std::to_string(got.size()) + " values, expected " + std::to_string(expected.size()));
    }
    for (size_t i = 0; i < got.size(); ++i) {
      if (!(got[i] == expected[i])) {
        return ok(false, what + ": differs first at " + std::to_string(i) + " (got " + std::to_string(got[i]) +
                             ", expected " + std::to_string(expected[i]) + ")");
      }
    }
    return ok(true, what);
  }

  // Runs `body`, reports, and returns the process exit status.
  int run(const std::function<void(Suite&)>& body) {
    try {
      body(*this);
    } catch (const std::exception& e) {
      ++failures_;
      std::printf("FAIL %s aborted: %s\n", name_.c_str(), e.what());
    }
    std::printf("%s: %d checks, %d failed (largest float difference seen %.3g)\n", name_.c_str(), checks_, failures_,
                max_abs_seen_);
    return failures_ == 0 && checks_ > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
  }

 private:
  std::string name_;
  int checks_ = 0, failures_ = 0;
  double max_abs_seen_ = 0;
};

}  // namespace check
