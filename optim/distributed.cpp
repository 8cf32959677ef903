#include "optim/distributed.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

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

void check_identical(const std::string& what, const std::string& text) {
#ifdef QTLAB_WITH_MPI
  if (!active()) return;
  // Compare a 64-bit hash and the length: cheap, and a mismatch is reported on every rank.
  unsigned long long mine[2] = {std::hash<std::string>{}(text), text.size()};
  std::vector<unsigned long long> all(2 * my_size);
  MPI_Allgather(mine, 2, MPI_UNSIGNED_LONG_LONG, all.data(), 2, MPI_UNSIGNED_LONG_LONG,
                MPI_COMM_WORLD);
  for (int r = 1; r < my_size; ++r)
    QT_CHECK(all[2 * r] == all[0] && all[2 * r + 1] == all[1],
             "distributed: {} differs between rank 0 and rank {}; every rank must be started with "
             "the same configuration",
             what, r);
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
