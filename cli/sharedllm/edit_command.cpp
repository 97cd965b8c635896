#include <iostream>
#include <string>

#include "cli/sharedllm/commands.h"
#include "llm/errors.h"
#include "sharedllm/surgery.h"

namespace sharedllm::cli {
namespace {

// "2:4,2:5" -> {(2, 4), (2, 5)}.
std::vector<std::pair<int64_t, int64_t>> ParseHeads(const std::string& text) {
  std::vector<std::pair<int64_t, int64_t>> out;
  size_t start = 0;
  while (start <= text.size() && !text.empty()) {
    const size_t end = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, end - start);
    const size_t colon = item.find(':');
    Check(colon != std::string::npos && colon > 0 && colon + 1 < item.size(),
          "--drop-heads takes LAYER:HEAD pairs, comma-separated (e.g. 2:0,2:3), not '" + item + "'");
    const auto numbers = ParseIdList(item.substr(0, colon) + "," + item.substr(colon + 1));
    out.emplace_back(numbers[0], numbers[1]);
    start = end + 1;
  }
  return out;
}

}  // namespace

int EditCommand(const Args& args) {
  std::string model, out, alphas, drop_heads;
  ModelEdit edit;
  FlagSet flags(
      "sharedllm edit --model DIR --out DIR [--separate-compressor] [--gate] [--sink] "
      "[--sink-logit L] [--injection-layers M [--inherit-o-scale S] [--own-lower]] "
      "[--depth H --alphas A,B] [--drop-heads L:H,...] [--chunk-budget N]",
      "Model surgery: writes a copy of the SharedLLM at --model, changed as the flags say, to\n"
      "--out (the base model's files copied as they are). The steps run in the order listed;\n"
      "all but --sink, --inherit-o-scale and --drop-heads leave every score unchanged until the\n"
      "new parts train. Train the written model with `sharedllm train` (the trainer trains what\n"
      "it loads).");
  flags.String("model", &model, "SharedLLM model directory to start from");
  flags.String("out", &out, "output directory (created; must differ from --model)");
  flags.Bool("separate-compressor", &edit.separate_compressor,
             "give the lower model its own copy of the bottom layers (compressor \"separate\")");
  flags.Bool("gate", &edit.gate, "add a per-head gate to every cross-attention (starts half open)");
  flags.Bool("sink", &edit.sink, "add an attention sink to every cross-attention, at --sink-logit");
  flags.Double("sink-logit", &edit.sink_logit,
               "starting logit of the sinks --sink and --injection-layers add (default 0)");
  flags.Int("injection-layers", &edit.injection_layers,
            "deepen a bottom injection to M layers (new ones start neutral); 0 keeps it");
  flags.Double("inherit-o-scale", &edit.inherit_o_scale,
               "the added layers' cross-attention starts as the layer's own heads, output x S");
  flags.Bool("own-lower", &edit.own_lower,
             "the added layers read the base's own lower layers, not copies in the compressor");
  flags.Int("depth", &edit.tree_depth, "the context tree's depth (with --alphas); 0 keeps it");
  flags.String("alphas", &alphas, "the tree's downsampling stride per level, comma-separated");
  flags.String("drop-heads", &drop_heads,
               "cross-attention heads to take out, LAYER:HEAD comma-separated; top injection "
               "layers left with no head are removed");
  flags.Int("chunk-budget", &edit.chunk_budget,
            "the most chunks one question reads (the count the model was trained for); 0: no "
            "limit; -1 keeps it");
  flags.Require("model");
  flags.Require("out");
  if (int rc = flags.Parse(args); rc >= 0) return rc;
  if (!alphas.empty()) edit.alphas = ParseIdList(alphas);
  if (!drop_heads.empty()) edit.drop_heads = ParseHeads(drop_heads);
  EditModel(model, out, edit);
  std::cerr << "wrote " << out << "\n";
  return 0;
}

}  // namespace sharedllm::cli
