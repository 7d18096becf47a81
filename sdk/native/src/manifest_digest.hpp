// manifest.json's own checksum, as converters/manifest.py manifest_digest computes it in Python.
#pragma once

#include <string>

#include "json.hpp"

namespace minivlm {

// The JSON text Python's json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")) writes
// for the document json.loads read, `skip_key` left out of the top-level object.
std::string python_canonical_json(const json::Value& value, const std::string& skip_key = "");

// repr() of a Python float: the shortest digits that read back as `x` (the nearest such when there are two),
// in fixed notation for exponents -4 < e <= 16 ("0.0001", "100.0"), else scientific ("1e-05", "1e+16").
std::string python_float_repr(double x);

// sha256 (hex) of the manifest's canonical JSON without its "manifest_sha256" entry.
std::string manifest_digest(const json::Value& manifest);

}  // namespace minivlm
