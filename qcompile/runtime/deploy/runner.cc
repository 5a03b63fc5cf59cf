// qcompile-runner: loads a library written by `qcompile build`, runs its Relax VM `main` on .npy inputs and
// writes each output as .npy. Needs only libtvm_runtime.so and libtvm_ffi.so beside it (or on the loader path).
//
//   qcompile-runner MODEL.so OUTPUT_PREFIX INPUT.npy [INPUT.npy ...]   → OUTPUT_PREFIX0.npy, OUTPUT_PREFIX1.npy, ...
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace ffi = tvm::ffi;

namespace {

// TVM's kernels assume 64-byte aligned buffers (aligned vector loads): malloc's 16 bytes would crash them.
struct CPUAlloc {
  void AllocData(DLTensor* t) { t->data = std::aligned_alloc(64, (ffi::GetDataSize(*t) + 63) / 64 * 64); }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

struct NpyType {
  const char* descr;
  DLDataType dtype;
};
const NpyType kTypes[] = {{"<f4", {kDLFloat, 32, 1}}, {"|u1", {kDLUInt, 8, 1}}, {"|i1", {kDLInt, 8, 1}},
                          {"<i4", {kDLInt, 32, 1}},   {"<i8", {kDLInt, 64, 1}}};

// A C-order .npy array of one of kTypes (NumPy format version 1 or 2).
ffi::Tensor ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  char magic[8];
  in.read(magic, 8);
  if (std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + " is not a .npy file");
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    uint16_t len16;
    in.read(reinterpret_cast<char*>(&len16), 2);
    header_len = len16;
  } else {
    in.read(reinterpret_cast<char*>(&header_len), 4);
  }
  std::string header(header_len, ' ');
  in.read(&header[0], header_len);
  if (header.find("'fortran_order': False") == std::string::npos) throw std::runtime_error(path + ": not C order");
  const NpyType* type = nullptr;
  for (const auto& t : kTypes)
    if (header.find(std::string("'descr': '") + t.descr + "'") != std::string::npos) type = &t;
  if (type == nullptr) throw std::runtime_error(path + ": unsupported dtype in " + header);
  std::vector<int64_t> shape;
  size_t open = header.find('(', header.find("'shape'")), close = header.find(')', open);
  std::stringstream dims(header.substr(open + 1, close - open - 1));
  std::string dim;
  while (std::getline(dims, dim, ','))
    if (dim.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(dim));
  ffi::Tensor tensor = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::Shape(shape), type->dtype, DLDevice{kDLCPU, 0});
  in.read(static_cast<char*>(tensor.data_ptr()), ffi::GetDataSize(tensor));
  if (!in) throw std::runtime_error(path + ": truncated data");
  return tensor;
}

void WriteNpy(const std::string& path, const DLTensor& t) {
  const char* descr = nullptr;
  for (const auto& type : kTypes)
    if (type.dtype.code == t.dtype.code && type.dtype.bits == t.dtype.bits) descr = type.descr;
  if (descr == nullptr) throw std::runtime_error("unsupported output dtype");
  std::string shape;
  for (int i = 0; i < t.ndim; ++i) shape += std::to_string(t.shape[i]) + (t.ndim == 1 ? "," : (i + 1 < t.ndim ? ", " : ""));
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (" + shape + "), }";
  header.append(64 - (10 + header.size() + 1) % 64, ' ').push_back('\n');
  std::ofstream out(path, std::ios::binary);
  uint16_t len = static_cast<uint16_t>(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.write(reinterpret_cast<const char*>(&len), 2);
  out << header;
  out.write(static_cast<const char*>(t.data), ffi::GetDataSize(t));
}

void Collect(const ffi::Any& value, std::vector<ffi::Tensor>* outputs) {
  if (auto tensor = value.try_cast<ffi::Tensor>()) {
    outputs->push_back(*tensor);
  } else if (auto array = value.try_cast<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& item : *array) Collect(item, outputs);
  } else {
    throw std::runtime_error("main returned something other than tensors");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: " << argv[0] << " MODEL.so OUTPUT_PREFIX INPUT.npy [INPUT.npy ...]\n";
    return 2;
  }
#if defined(__linux__) && defined(__x86_64__)
  // AMX kernels (the x86-amx target) need the tile state, which Linux grants a process only when asked
  // (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); on CPUs without AMX the request fails, harmlessly.
  syscall(SYS_arch_prctl, 0x1023, 18);
#endif
  try {
    ffi::Module library = ffi::Module::LoadFromFile(argv[1]);
    ffi::Module vm = library->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
    const int kPooledAllocator = 2;
    vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, kPooledAllocator);
    std::vector<ffi::Any> inputs;
    for (int i = 3; i < argc; ++i) inputs.push_back(ReadNpy(argv[i]));
    std::vector<ffi::AnyView> views(inputs.begin(), inputs.end());
    ffi::Any result;
    vm->GetFunction("main").value().CallPacked(views.data(), static_cast<int>(views.size()), &result);
    std::vector<ffi::Tensor> outputs;
    Collect(result, &outputs);
    for (size_t i = 0; i < outputs.size(); ++i) {
      std::string path = std::string(argv[2]) + std::to_string(i) + ".npy";
      WriteNpy(path, *outputs[i].GetDLTensorPtr());
      std::cout << path << "\n";
    }
  } catch (const std::exception& err) {
    std::cerr << "qcompile-runner: " << err.what() << "\n";
    return 1;
  }
  return 0;
}
