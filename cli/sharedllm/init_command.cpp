#include <filesystem>
#include <iostream>

#include "llm/errors.h"
#include "llm/file_util.h"
#include "llm/safetensors.h"
#include "cli/sharedllm/commands.h"
#include "sharedllm/surgery.h"

namespace sharedllm::cli {

int InitCommand(const Args& args) {
  std::string base, out, alphas = "16,8,4", selection = "first", injection = "bottom";
  int64_t layers = 4, chunk_size = 1024, depth = 3;
  bool no_chunk_positions = false, no_search = false;
  double inherit_o_scale = 0;
  FlagSet flags("sharedllm init --base DIR --out DIR [--layers M] [--chunk-size C] [--depth H]",
                "Writes an untrained SharedLLM: the base model's files, sharedllm.json, and\n"
                "sharedllm.safetensors with the new cross-attention weights (q_proj and norm\n"
                "copied from each injection layer, o_proj zero), so that it computes exactly what\n"
                "the base model computes until it is trained; or, with --inherit-o-scale S,\n"
                "o_proj = S x the layer's self-attention o_proj: each injection layer's own heads\n"
                "read the context from the start, the base's copying heads among them.");
  flags.String("base", &base, "base model directory (Hugging Face layout)");
  flags.String("out", &out, "output directory (created)");
  flags.Int("layers", &layers, "M: lower-model depth = number of cross-attention layers");
  flags.Int("chunk-size", &chunk_size, "C: tokens per chunk, at most the model's window");
  flags.Int("depth", &depth, "h: tree levels below the chunk");
  flags.String("alphas", &alphas, "downsampling stride per level, comma-separated");
  flags.String("selection", &selection, "kept position of each stride block: first | last | mean");
  flags.String("injection", &injection, "injection layers: bottom | top | interleaved");
  flags.Bool("no-chunk-positions", &no_chunk_positions, "no rotary chunk positions (ablation)");
  flags.Bool("no-search", &no_search, "no query-aware search (ablation): right child always");
  flags.Double("inherit-o-scale", &inherit_o_scale,
               "start the cross-attentions as their layers' own heads, output scaled by S "
               "(0: neutral)");
  flags.Require("base");
  flags.Require("out");
  if (int rc = flags.Parse(args); rc >= 0) return rc;

  SharedLLMConfig config;
  config.num_injection_layers = layers;
  config.chunk_size = chunk_size;
  config.tree_depth = depth;
  config.alphas = ParseIdList(alphas);
  config.selection = selection;
  config.injection = injection;
  config.chunk_positions = !no_chunk_positions;
  config.search = !no_search;

  RuntimeOptions runtime;
  auto model = LoadModel(base, runtime);
  Check(model->shared == nullptr, base + " is already a SharedLLM");
  SharedLLM shared(model->lm, config, inherit_o_scale);  // validates against the base model
  namespace fs = std::filesystem;
  fs::create_directories(out);
  Check(fs::canonical(out) != fs::canonical(base), "--out must differ from --base");
  CopyBaseModelFiles(base, out);
  SaveSharedLLM(shared, out, model->lm->model->embed_tokens->weight.scalar_type());
  std::cerr << "wrote " << out << ": SharedLLM with " << layers << " injection layers ("
            << injection << "), chunk " << chunk_size << ", depth " << depth
            << ", compression " << config.CompressionRatio() << "x\n";
  return 0;
}

}  // namespace sharedllm::cli
