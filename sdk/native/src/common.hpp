// Errors inside the core: C++ exceptions carrying an mvlm_status, turned into status codes and a thread-local
// message at the C boundary (`guard`). Nothing here is visible to apps.
#pragma once

// The host steps reproduce python_ref's float32 arithmetic operation by operation, so a multiply and an add must
// never be fused (clang fuses within an expression by default; the CMake build also passes -ffp-contract=off).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "minivlm/minivlm.h"

namespace minivlm {

class Error : public std::runtime_error {
 public:
  Error(mvlm_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  mvlm_status status() const { return status_; }

 private:
  mvlm_status status_;
};

[[noreturn]] inline void fail(mvlm_status status, const std::string& message) { throw Error(status, message); }

// "12", "-3" for messages.
template <typename T>
std::string str(T value) {
  return std::to_string(value);
}

// A double for messages (12 significant digits, "." as the decimal point whatever the locale).
std::string str_double(double value);

// Reads a whole file; MVLM_IO_ERROR naming the path when it cannot be opened or read.
std::string read_file(const std::string& path, const char* what);

}  // namespace minivlm

namespace minivlm {

// The thread-local last error (a fixed buffer: recording an error never allocates).
void set_error(const char* message);

// Runs `f` and turns whatever it throws into a status and a last-error message. Nothing escapes.
template <typename F>
mvlm_status guard(F&& f) noexcept {
  try {
    set_error("");
    f();
    return MVLM_OK;
  } catch (const Error& e) {
    set_error(e.what());
    return e.status();
  } catch (const std::bad_alloc&) {
    set_error("out of memory");
    return MVLM_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_error(e.what());
    return MVLM_INTERNAL;
  } catch (...) {
    set_error("unknown internal error");
    return MVLM_INTERNAL;
  }
}

// MVLM_INVALID_ARGUMENT "<name> is NULL" unless `p` is set.
template <typename T>
void require(const T* p, const char* name) {
  if (p == nullptr) fail(MVLM_INVALID_ARGUMENT, std::string(name) + " is NULL");
}

// Validates a config (mvlm_config_check) and returns it.
const mvlm_config& checked(const mvlm_config* config);

// Copies `value` into a caller buffer with the C API's convention (length always set, NUL when it fits).
void copy_out(const std::string& value, char* buffer, size_t capacity, size_t* length);

}  // namespace minivlm
