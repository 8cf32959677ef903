// Embedding lookup (see nn/embedding.h).
//
//   forward:   y[p, :] = W[ids[p], :]
//   backward:  dW[v, :] = sum over positions p with ids[p] = v of dy[p, :]
//
// Both are the tensor library's kernels through the differentiable qt::embedding: the gather is
// ops::embedding (every id is range-checked before anything is read, and an id out of range throws
// naming the id and its position) and the scatter-add is ops::embedding_backward, which gives each
// table row to one thread and adds its contributions in position order (deterministic, no atomics).
#include "nn/embedding.h"

#include "autograd/functions.h"

namespace qt::nn {

Embedding::Embedding(int64_t num_embeddings, int64_t dim, InitRng& rng)
    : num_embeddings(num_embeddings), dim(dim) {
  QT_CHECK(num_embeddings > 0 && dim > 0,
           "Embedding: num_embeddings and dim must be positive, got {} and {}", num_embeddings,
           dim);
  weight = register_parameter("weight", rng.normal({num_embeddings, dim}, 1.0));
}

Tensor Embedding::forward(const Tensor& ids) const {
  check_defined(ids, "Embedding");
  QT_CHECK(ids.dtype() == DType::i64 || ids.dtype() == DType::i32,
           "Embedding: ids must be i32 or i64, got {} of shape {}", dtype_name(ids.dtype()),
           shape_str(ids.shape()));
  // The lookup kernels take i64; i32 ids (e.g. from a tokenizer) are widened, exactly.
  const Tensor ids64 = ids.dtype() == DType::i64 ? ids : ops::to(ids, DType::i64);
  return qt::embedding(weight, ids64);
}

}  // namespace qt::nn
