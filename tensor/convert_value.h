// Converting one element value between dtypes, with defined results for every input.
//
// Internal helper shared by ops::to, ops::full / fill_ and ops::to_vector. The rules:
//   - to a floating type: the ordinary C++ conversion (round to nearest);
//   - floating -> integer: truncate toward zero like a C cast, but where a C cast would be
//   undefined
//     behaviour it is defined here: values beyond the integer type's range saturate to its
//     minimum / maximum, and NaN becomes 0;
//   - integer -> integer: the C++20 conversion, i.e. the value modulo 2^bits (two's complement),
//     exactly what a C cast does on every platform we target.
#pragma once

#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace qt::detail {

template <typename To, typename From>
inline To convert_value(From value) {
  if constexpr (std::is_floating_point_v<To> || std::is_integral_v<From>) {
    return static_cast<To>(value);
  } else {
    // floating -> integer. The bounds are exact powers of two (or 0), representable in From, so the
    // comparisons are exact: value < 2^(bits-1) (signed) or < 2^bits (unsigned) fits after
    // truncation.
    if (std::isnan(value)) return To{0};
    constexpr From lowest = static_cast<From>(std::numeric_limits<To>::min());  // 0 or -2^(bits-1)
    constexpr From above_max = static_cast<From>(std::numeric_limits<To>::max() / 2 + 1) * From{2};
    if (value <= lowest) return std::numeric_limits<To>::min();
    if (value >= above_max) return std::numeric_limits<To>::max();
    return static_cast<To>(value);  // in range after truncation: |value| < 2^bits
  }
}

}  // namespace qt::detail
