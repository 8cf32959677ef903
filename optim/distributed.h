// Data-parallel training over MPI: every rank holds a full model replica, trains on its slice of
// the global batch, and the gradients are averaged before the optimizer step, so all replicas stay
// identical. Without MPI (not built with it, or not started by mpirun) the world is one process and
// every call below is a no-op or an identity.
//
// Failure policy: a rank that throws calls abort_all(message), which prints the message and takes
// every rank down (MPI_Abort); a rank that dies is noticed by mpirun, which terminates the others.
// Nothing waits forever on a dead peer.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace qt::distributed {

// Starts MPI when this process was launched by mpirun (OMPI_COMM_WORLD_SIZE / PMI_SIZE set).
void init(int* argc, char*** argv);
void finalize();   // idempotent
bool active();     // MPI started and more than one rank
int rank();        // 0 when not distributed
int world_size();  // 1 when not distributed
bool built_with_mpi();

// In-place sum over all ranks of a float / double buffer.
void allreduce_sum(float* data, int64_t count);
void allreduce_sum(double* data, int64_t count);
double allreduce_sum(double value);

// Sums every parameter's gradient over the ranks and divides by the world size (one packed
// MPI_Allreduce). Parameters without a gradient get a zero gradient on every rank, so the call is
// collective and identical on all ranks.
void average_gradients(const std::vector<Tensor>& parameters);

// Broadcasts rank 0's parameter values to every rank (start of training).
void broadcast_parameters(const std::vector<Tensor>& parameters);

// Named values that must agree on every rank (the resolved config key by key, the subcommand, the
// step a run resumes at, ...).
using LaunchEntries = std::vector<std::pair<std::string, std::string>>;

// Throws (on every rank, with the same message) when `entries` differ between ranks, naming
// `what`, the first rank that differs from rank 0, the first differing key and both values —
// "train.seed = 1 on rank 0, 2 on rank 1". Collective: every rank must call it at the same point.
void check_identical(const std::string& what, const LaunchEntries& entries);

// Prints "error (rank r): message" and terminates all ranks (or rethrows when not distributed).
[[noreturn]] void abort_all(const std::string& message);

}  // namespace qt::distributed
