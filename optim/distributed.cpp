#include "optim/distributed.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

#include "tensor/error.h"
#include "tensor/view.h"

#ifdef QTLAB_WITH_MPI
#include <mpi.h>
#endif

namespace qt::distributed {

namespace {

bool started = false;
int my_rank = 0;
int my_size = 1;

bool launched_by_mpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr ||
         std::getenv("PMIX_RANK") != nullptr;
}

// Every parameter's gradient (or zeros) packed into one float buffer, in parameter order.
int64_t total_elements(const std::vector<Tensor>& parameters) {
  int64_t total = 0;
  for (const Tensor& p : parameters) {
    QT_CHECK(p.dtype() == DType::f32, "distributed: only f32 parameters are supported, not {}",
             dtype_name(p.dtype()));
    total += p.numel();
  }
  return total;
}

}  // namespace

bool built_with_mpi() {
#ifdef QTLAB_WITH_MPI
  return true;
#else
  return false;
#endif
}

void init(int* argc, char*** argv) {
#ifdef QTLAB_WITH_MPI
  if (started || !launched_by_mpirun()) return;
  int already = 0;
  MPI_Initialized(&already);
  if (!already) MPI_Init(argc, argv);
  // Errors in MPI calls end the job instead of returning codes nobody checks.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
  MPI_Comm_rank(MPI_COMM_WORLD, &my_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &my_size);
  started = true;
#else
  if (launched_by_mpirun())
    std::fprintf(stderr,
                 "warning: started by mpirun but qtlab was built without MPI; every rank runs "
                 "alone (install libopenmpi-dev and rebuild)\n");
#endif
}

void finalize() {
#ifdef QTLAB_WITH_MPI
  if (!started) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
  started = false;
  my_rank = 0;
  my_size = 1;
#endif
}

bool active() {
  return started && my_size > 1;
}
int rank() {
  return my_rank;
}
int world_size() {
  return my_size;
}

void allreduce_sum(float* data, int64_t count) {
#ifdef QTLAB_WITH_MPI
  if (!active()) return;
  // MPI counts are int: reduce in chunks of at most 2^30 elements.
  for (int64_t start = 0; start < count; start += int64_t(1) << 30) {
    const int n = static_cast<int>(std::min<int64_t>(count - start, int64_t(1) << 30));
    MPI_Allreduce(MPI_IN_PLACE, data + start, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  }
#endif
}

void allreduce_sum(double* data, int64_t count) {
#ifdef QTLAB_WITH_MPI
  if (!active()) return;
  for (int64_t start = 0; start < count; start += int64_t(1) << 30) {
    const int n = static_cast<int>(std::min<int64_t>(count - start, int64_t(1) << 30));
    MPI_Allreduce(MPI_IN_PLACE, data + start, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  }
#endif
}

double allreduce_sum(double value) {
  allreduce_sum(&value, 1);
  return value;
}

void average_gradients(const std::vector<Tensor>& parameters) {
  if (!active()) return;
  std::vector<float> packed(total_elements(parameters), 0.0f);
  int64_t at = 0;
  for (const Tensor& p : parameters) {
    const Tensor g = p.grad();
    if (g.defined()) {
      const Tensor dense = g.is_contiguous() ? g : ops::contiguous(g);
      std::memcpy(packed.data() + at, dense.data<float>(), p.numel() * sizeof(float));
    }
    at += p.numel();
  }
  allreduce_sum(packed.data(), static_cast<int64_t>(packed.size()));
  const float inverse = 1.0f / static_cast<float>(my_size);
  at = 0;
  for (const Tensor& p : parameters) {
    // Written back into the existing gradient when it is dense (no new allocation per step).
    Tensor g = p.grad();
    if (!g.defined() || !g.is_contiguous()) {
      g = Tensor::empty(p.shape(), DType::f32);
      p.set_grad(g);
    }
    float* out = g.data<float>();
    for (int64_t i = 0; i < p.numel(); ++i) out[i] = packed[at + i] * inverse;
    at += p.numel();
  }
}

void broadcast_parameters(const std::vector<Tensor>& parameters) {
#ifdef QTLAB_WITH_MPI
  if (!active()) return;
  std::vector<float> packed(total_elements(parameters));
  int64_t at = 0;
  for (const Tensor& p : parameters) {
    QT_CHECK(p.is_contiguous(), "distributed: broadcast_parameters needs contiguous parameters");
    std::memcpy(packed.data() + at, p.data<float>(), p.numel() * sizeof(float));
    at += p.numel();
  }
  MPI_Bcast(packed.data(), static_cast<int>(packed.size()), MPI_FLOAT, 0, MPI_COMM_WORLD);
  at = 0;
  for (const Tensor& p : parameters) {
    std::memcpy(const_cast<Tensor&>(p).data<float>(), packed.data() + at,
                p.numel() * sizeof(float));
    at += p.numel();
  }
#endif
}

#ifdef QTLAB_WITH_MPI
namespace {

// Entries as one text for the wire: key, value, key, value, ... each followed by a NUL.
std::string serialize(const LaunchEntries& entries) {
  std::string text;
  for (const auto& [key, value] : entries) {
    text += key;
    text += '\0';
    text += value;
    text += '\0';
  }
  return text;
}

LaunchEntries deserialize(const std::string& text) {
  LaunchEntries entries;
  size_t at = 0;
  while (at < text.size()) {
    const size_t key_end = text.find('\0', at);
    const size_t value_end = text.find('\0', key_end + 1);
    entries.emplace_back(text.substr(at, key_end - at),
                         text.substr(key_end + 1, value_end - key_end - 1));
    at = value_end + 1;
  }
  return entries;
}

// "key = a on rank 0, b on rank r" for the first key whose value differs ("" when none does).
std::string first_difference(const LaunchEntries& reference, const LaunchEntries& mine, int r) {
  std::map<std::string, std::string> theirs(reference.begin(), reference.end());
  std::map<std::string, std::string> ours(mine.begin(), mine.end());
  const auto describe = [&](const std::string& key) {
    const auto a = theirs.find(key), b = ours.find(key);
    return fmt::format("{} = {} on rank 0, {} on rank {}", key,
                       a == theirs.end() ? "(absent)" : a->second,
                       b == ours.end() ? "(absent)" : b->second, r);
  };
  for (const auto& [key, value] : reference) {
    const auto found = ours.find(key);
    if (found == ours.end() || found->second != value) return describe(key);
  }
  for (const auto& [key, value] : mine)
    if (!theirs.count(key)) return describe(key);
  return "";
}

// `text` of rank `root` on every rank.
std::string broadcast_text(const std::string& text, int root) {
  unsigned long long length = text.size();
  MPI_Bcast(&length, 1, MPI_UNSIGNED_LONG_LONG, root, MPI_COMM_WORLD);
  QT_CHECK(length < (1ull << 30), "distributed: a {}-byte launch description is too long", length);
  std::string out = my_rank == root ? text : std::string(length, '\0');
  MPI_Bcast(out.data(), static_cast<int>(length), MPI_CHAR, root, MPI_COMM_WORLD);
  return out;
}

}  // namespace
#endif

void check_identical(const std::string& what, const LaunchEntries& entries) {
#ifdef QTLAB_WITH_MPI
  if (!active()) return;
  // Rank 0's entries go to every rank; each rank compares its own; the first rank that differs
  // sends its description of the difference to all, so that every rank throws the same message
  // (whichever rank's abort prints first, it names the key).
  const LaunchEntries reference = deserialize(broadcast_text(serialize(entries), 0));
  const std::string difference = my_rank == 0 ? "" : first_difference(reference, entries, my_rank);
  int differs = difference.empty() ? 0 : 1;
  std::vector<int> all(static_cast<size_t>(my_size));
  MPI_Allgather(&differs, 1, MPI_INT, all.data(), 1, MPI_INT, MPI_COMM_WORLD);
  for (int r = 1; r < my_size; ++r) {
    if (all[static_cast<size_t>(r)] == 0) continue;
    fail(
        "distributed: {} differs between rank 0 and rank {}: {}; every rank must be started the "
        "same way",
        what, r, broadcast_text(difference, r));
  }
#else
  (void)what;
  (void)entries;
#endif
}

void abort_all(const std::string& message) {
  std::fprintf(stderr, "error (rank %d of %d): %s\n", my_rank, my_size, message.c_str());
  std::fflush(stderr);
#ifdef QTLAB_WITH_MPI
  if (started) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
  std::exit(1);
}

}  // namespace qt::distributed
