#include "cli/flags/flags.h"

#include <iostream>
#include <sstream>
#include <stdexcept>

namespace sharedllm::cli {

FlagSet::FlagSet(std::string usage, std::string description)
    : usage_(std::move(usage)), description_(std::move(description)) {}

void FlagSet::String(const std::string& name, std::string* out, const std::string& help) {
  flags_.push_back({name, help, "TEXT", *out, [out](const std::string& v) { *out = v; return true; }});
}

void FlagSet::Int(const std::string& name, int64_t* out, const std::string& help) {
  flags_.push_back({name, help, "N", std::to_string(*out), [out](const std::string& v) {
                      size_t used = 0;
                      try {
                        *out = std::stoll(v, &used);
                      } catch (const std::exception&) {
                        return false;
                      }
                      return used == v.size();
                    }});
}

void FlagSet::Double(const std::string& name, double* out, const std::string& help) {
  std::ostringstream d;
  d << *out;
  flags_.push_back({name, help, "X", d.str(), [out](const std::string& v) {
                      size_t used = 0;
                      try {
                        *out = std::stod(v, &used);
                      } catch (const std::exception&) {
                        return false;
                      }
                      return used == v.size();
                    }});
}

void FlagSet::Bool(const std::string& name, bool* out, const std::string& help) {
  flags_.push_back({name, help, "", *out ? "true" : "", [out](const std::string& v) {
                      if (v == "" || v == "true" || v == "1") *out = true;
                      else if (v == "false" || v == "0") *out = false;
                      else return false;
                      return true;
                    }});
}

void FlagSet::List(const std::string& name, std::vector<std::string>* out, const std::string& help) {
  flags_.push_back({name, help + " (repeatable)", "TEXT", "",
                    [out](const std::string& v) { out->push_back(v); return true; }});
}

void FlagSet::Require(const std::string& name) {
  if (Flag* f = Find(name)) f->required = true;
}

FlagSet::Flag* FlagSet::Find(const std::string& name) {
  for (auto& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

bool FlagSet::Given(const std::string& name) const {
  for (const auto& f : flags_) {
    if (f.name == name) return f.given;
  }
  return false;
}

std::string FlagSet::Help() const {
  std::ostringstream out;
  out << "usage: " << usage_ << "\n\n" << description_ << "\n\nflags:\n";
  for (const auto& f : flags_) {
    std::string left = "  --" + f.name + (f.kind.empty() ? "" : " " + f.kind);
    out << left << std::string(left.size() < 28 ? 28 - left.size() : 1, ' ') << f.help;
    if (f.required) out << " (required)";
    else if (!f.default_text.empty()) out << " (default: " << f.default_text << ")";
    out << "\n";
  }
  out << "  --help                    this text\n";
  return out.str();
}

int FlagSet::Parse(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << Help();
      return 0;
    }
    if (a.rfind("--", 0) != 0) {
      std::cerr << "unexpected argument '" << a << "'\n\n" << Help();
      return 2;
    }
    std::string name = a.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    Flag* f = Find(name);
    if (!f) {
      std::cerr << "unknown flag --" << name << "\n\n" << Help();
      return 2;
    }
    if (!has_value && !f->kind.empty()) {
      if (i + 1 >= args.size()) {
        std::cerr << "flag --" << name << " needs a value\n";
        return 2;
      }
      value = args[++i];
    }
    if (!f->set(value)) {
      std::cerr << "bad value '" << value << "' for --" << name << "\n";
      return 2;
    }
    f->given = true;
  }
  for (const auto& f : flags_) {
    if (f.required && !f.given) {
      std::cerr << "missing required flag --" << f.name << "\n\n" << Help();
      return 2;
    }
  }
  return -1;
}

std::vector<int64_t> ParseIdList(const std::string& text) {
  std::vector<int64_t> ids;
  std::stringstream in(text);
  std::string item;
  if (!text.empty() && text.back() == ',') throw std::invalid_argument("trailing ',' in '" + text + "'");
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size()) throw std::invalid_argument("bad token id '" + item + "'");
    ids.push_back(v);
  }
  return ids;
}

std::vector<double> ParseDoubleList(const std::string& text) {
  std::vector<double> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size()) throw std::invalid_argument("bad number '" + item + "' in '" + text + "'");
    out.push_back(v);
  }
  if (out.empty()) throw std::invalid_argument("empty list '" + text + "'");
  return out;
}

}  // namespace sharedllm::cli
