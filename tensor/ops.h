// All plain tensor kernels in one include (namespace qt::ops).
#pragma once

#include "tensor/compare.h"
#include "tensor/create.h"
#include "tensor/elementwise.h"
#include "tensor/index.h"
#include "tensor/matmul.h"
#include "tensor/reduce.h"
#include "tensor/softmax.h"
#include "tensor/tensor.h"
#include "tensor/view.h"
