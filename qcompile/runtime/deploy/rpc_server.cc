// qcompile-rpc-server: a TVM RPC server for a board, speaking TVM's standard protocol, so that a host can
// upload a library, run it and time it there with tvm.rpc.connect(HOST, PORT, key=KEY).
//
//   qcompile-rpc-server [--host 0.0.0.0] [--port 9090] [--key KEY] [--once]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>

namespace ffi = tvm::ffi;

namespace {

const int32_t kRPCMagic = 0xFF271;  // tvm/rpc/base.py: RPC_MAGIC; +0 success, +2 key mismatch

volatile std::sig_atomic_t stop_requested = 0;

void RequestStop(int) { stop_requested = 1; }

// Removes what a session uploaded: a board's storage is small, and the libraries are not needed after it.
void ClearFolder(const std::string& folder) {
  std::error_code ignored;
  for (const auto& entry : std::filesystem::directory_iterator(folder, ignored))
    std::filesystem::remove_all(entry.path(), ignored);
}

bool RecvAll(int fd, void* data, size_t size) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    ssize_t n = recv(fd, p, size, 0);
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

void SendInt(int fd, int32_t value) { send(fd, &value, sizeof(value), 0); }

// The client sends the magic, then "client:KEY [options]"; the server answers with success and "server:KEY".
bool Handshake(int fd, const std::string& key) {
  int32_t magic = 0, length = 0;
  if (!RecvAll(fd, &magic, 4) || magic != kRPCMagic || !RecvAll(fd, &length, 4) || length < 0 || length > 4096)
    return false;
  std::string header(static_cast<size_t>(length), '\0');
  if (!RecvAll(fd, &header[0], header.size())) return false;
  std::string expected = "client:" + key;
  if (header.compare(0, expected.size(), expected) != 0 ||
      (header.size() > expected.size() && header[expected.size()] != ' ')) {
    SendInt(fd, kRPCMagic + 2);
    return false;
  }
  std::string reply = "server:" + key;
  SendInt(fd, kRPCMagic);
  SendInt(fd, static_cast<int32_t>(reply.size()));
  send(fd, reply.data(), reply.size(), 0);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "0.0.0.0", key;
  int port = 9090;
  bool once = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--host" && i + 1 < argc) host = argv[++i];
    else if (arg == "--port" && i + 1 < argc) port = std::atoi(argv[++i]);
    else if (arg == "--key" && i + 1 < argc) key = argv[++i];
    else if (arg == "--once") once = true;
    else {
      std::cerr << "usage: " << argv[0] << " [--host 0.0.0.0] [--port 9090] [--key KEY] [--once]\n";
      return 2;
    }
  }
  char work_template[] = "/tmp/qcompile-rpc-XXXXXX";
  std::string work = mkdtemp(work_template);
  // Uploaded files land in the work folder; load_module loads them from there.
  ffi::Function::SetGlobal("tvm.rpc.server.workpath", ffi::Function::FromTyped([work](ffi::String name) {
    return ffi::String(work + "/" + std::string(name));
  }), true);
  ffi::Function::SetGlobal("tvm.rpc.server.load_module", ffi::Function::FromTyped([work](ffi::String name) {
    return ffi::Module::LoadFromFile(work + "/" + std::string(name));
  }), true);

  int listener = socket(AF_INET, SOCK_STREAM, 0);
  int yes = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &address.sin_addr) != 1 ||
      bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 || listen(listener, 1) != 0) {
    std::cerr << "qcompile-rpc-server: cannot listen on " << host << ":" << port << ": " << std::strerror(errno)
              << "\n";
    return 1;
  }
  std::cout << "qcompile-rpc-server: listening on " << host << ":" << port << std::endl;
  ffi::Function serve = ffi::Function::GetGlobal("rpc.ServerLoop").value();
  // Ctrl-C or SIGTERM: finish the session being served, then remove the work folder and exit. No SA_RESTART, so
  // that a waiting accept() returns.
  struct sigaction on_stop{};
  on_stop.sa_handler = RequestStop;
  sigaction(SIGINT, &on_stop, nullptr);
  sigaction(SIGTERM, &on_stop, nullptr);
  while (!stop_requested) {
    int connection = accept(listener, nullptr, nullptr);
    if (connection < 0) continue;
    if (Handshake(connection, key)) {
      try {
        serve(connection);
      } catch (const std::exception& err) {
        std::cerr << "qcompile-rpc-server: session ended: " << err.what() << "\n";
      }
    }
    close(connection);
    ClearFolder(work);
    if (once) break;
  }
  close(listener);
  std::error_code ignored;
  std::filesystem::remove_all(work, ignored);
  return 0;
}
