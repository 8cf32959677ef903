// Building the optimizer's parameter groups from a model's named parameters: which parameters get
// weight decay.
//
// The rule of the paper's training scripts (method.md §6.1, §6.2), as in HF run_mlm.py /
// run_clm.py:
//   no decay:  every parameter whose name contains "bias" (linear biases, LayerNorm β, gate
//   biases),
//              and the LayerNorm weights γ (unless decay_layer_norm_weight, OPT's --wd_LN_gamma);
//   decay:     everything else (linear and embedding weights, the per-head gate weights, ...).
#pragma once

#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace qt::optim {

// True for the scale γ of a normalisation layer. The rule: the last name component is "weight" and
// the one before it (the module's own name), lower-cased and with trailing digits and underscores
// removed, ends in "norm" or contains "layer_norm" / "layernorm". It matches qtlab's names
// ("attention_layer_norm.weight", "output_layer_norm.weight", "embeddings.layer_norm.weight",
// "final_layer_norm.weight", "norm1.weight") as well as HF's ("LayerNorm.weight",
// "self_attn_layer_norm.weight"), and not "dense.weight", "normalizer_proj.weight" or a bare
// "weight".
bool is_layer_norm_weight(const std::string& name);

// True when the name contains "bias" anywhere (HF's substring test).
bool is_bias(const std::string& name);

struct WeightDecayRule {
  double weight_decay = 0.0;
  // Spec §6.2 --wd_LN_gamma: also decay the LayerNorm weights γ.
  bool decay_layer_norm_weight = false;
  // Further parameters to exclude by exact name (e.g. timm's ViT excludes "pos_embed" and
  // "cls_token").
  std::vector<std::string> no_decay_names;
};

// Two groups, always in this order and each possibly empty: [0] the decayed parameters with
// rule.weight_decay, [1] the rest with weight_decay 0. Parameters keep their order within a group.
std::vector<ParameterGroup> weight_decay_groups(const NamedTensors& named_parameters,
                                                const WeightDecayRule& rule);

}  // namespace qt::optim
