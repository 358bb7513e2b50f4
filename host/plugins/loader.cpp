#include "plugins/loader.hpp"

// Boost 1.74's library_info headers use std::vector without including it.
#include <string>
#include <vector>

#define BOOST_DLL_USE_STD_FS
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <boost/dll/library_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>

#include "digest/digest.hpp"
#include "posix/unique_fd.hpp"

namespace wk::plugins::detail {
namespace fs = std::filesystem;

namespace {

constexpr size_t kEntrySizeV1_0 = offsetof(wk_plugin_entry, get_extension) + sizeof(void*);
constexpr size_t kHandlerSizeV1_0 = offsetof(wk_handler_desc, on_cancel) + sizeof(void*);
constexpr size_t kMaxPluginBytes = size_t{512} * 1024 * 1024;
constexpr size_t kMaxTextLen = 4096;

// Libraries are never dlclose'd (docs/plugin-loading.md, "retire"): a plugin may have left
// threads, TLS destructors or atexit handlers behind. They are parked here until process exit.
// Process-wide because their lifetime is the process's, not any PluginHost's.
class RetiredLibraries {
 public:
  static void keep(boost::dll::shared_library library) {
    static RetiredLibraries* const retired = new RetiredLibraries();  // never destroyed
    std::lock_guard lock(retired->mu_);
    retired->libraries_.push_back(std::move(library));
  }

 private:
  std::mutex mu_;
  std::vector<boost::dll::shared_library> libraries_;
};

// Reads `file` in 64 KiB chunks (a plugin is megabytes: never the whole file in memory, whose
// freed heap would stay with the worker) and hands each to `chunk`.
template <class Chunk>
void read_chunks(const fs::path& file, Chunk&& chunk) {
  const posix::UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) throw Refused("cannot open: " + std::string(std::strerror(errno)));
  std::array<char, size_t{1} << 16> buffer;
  uint64_t total = 0;
  while (true) {
    const ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Refused("cannot read: " + std::string(std::strerror(errno)));
    }
    if (n == 0) return;
    total += static_cast<uint64_t>(n);
    if (total > kMaxPluginBytes) throw Refused("larger than 512 MiB");
    chunk(std::string_view(buffer.data(), static_cast<size_t>(n)));
  }
}

// A read-only mapping of a whole file (the staged copy, for the ELF checks): its pages are the
// page cache's, not the heap's.
class MappedFile {
 public:
  explicit MappedFile(const fs::path& file) {
    const posix::UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    struct stat st {};
    if (fd.get() < 0 || ::fstat(fd.get(), &st) != 0) throw Refused("cannot open the staged copy");
    size_ = static_cast<size_t>(st.st_size);
    if (size_ == 0) return;
    void* at = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (at == MAP_FAILED) throw Refused("cannot map the staged copy: " + std::string(std::strerror(errno)));
    data_ = static_cast<const char*>(at);
  }
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<char*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  std::string_view bytes() const { return {data_ == nullptr ? "" : data_, size_}; }

 private:
  const char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace

std::string file_sha256(const fs::path& file) {
  digest::Sha256 sha;
  read_chunks(file, [&](std::string_view chunk) { sha.update(chunk); });
  return sha.hex();
}

std::vector<fs::path> plugin_files(const fs::path& dir) {
  if (auto problem = unsafe_permissions(dir, true)) {
    throw std::runtime_error("plugin directory " + dir.string() + ": " + *problem);
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".so") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

namespace {

// Copies `file` into the staging directory (only we can write there) while hashing the very bytes
// it writes, read-only under a temporary name, then renames it to <stem>@<sha256>.so, so dlopen
// always sees a complete file and a fresh inode. Returns the staged path and the digest.
std::pair<fs::path, std::string> stage_copy(const StagingDir& staging, const fs::path& file) {
  std::string temporary = (staging.path() / (file.stem().string() + ".XXXXXX")).string();
  const posix::UniqueFd out(::mkostemp(temporary.data(), O_CLOEXEC));
  if (out.get() < 0)
    throw Refused("cannot stage a copy in " + staging.path().string() + ": " + std::strerror(errno));
  struct Unlink {
    const std::string& path;
    bool keep = false;
    ~Unlink() {
      if (!keep) ::unlink(path.c_str());
    }
  } unlink_temporary{temporary};
  digest::Sha256 sha;
  read_chunks(file, [&](std::string_view chunk) {
    sha.update(chunk);
    while (!chunk.empty()) {
      const ssize_t n = ::write(out.get(), chunk.data(), chunk.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw Refused("cannot write the staged copy: " + std::string(std::strerror(errno)));
      chunk.remove_prefix(static_cast<size_t>(n));
    }
  });
  if (::fchmod(out.get(), 0500) != 0)
    throw Refused("cannot stage a copy: " + std::string(std::strerror(errno)));
  std::string digest = sha.hex();
  fs::path target = staging.path() / (file.stem().string() + "@" + digest + ".so");
  if (::rename(temporary.c_str(), target.c_str()) != 0) {
    throw Refused("cannot stage a copy: " + std::string(std::strerror(errno)));
  }
  unlink_temporary.keep = true;
  return {std::move(target), std::move(digest)};
}

// Boost 1.74's library_info reads only .symtab, which `strip` removes; a stripped plugin still
// exports its entry through .dynsym, which is what dlsym uses. This reads .dynsym of an ELF64
// little-endian image (our targets), bounds-checked, without running anything.
bool dynsym_exports(std::string_view image, std::string_view symbol) {
  auto fits = [&](uint64_t offset, uint64_t size) {
    return offset <= image.size() && size <= image.size() - offset;
  };
  if (image.size() < sizeof(Elf64_Ehdr) || std::memcmp(image.data(), ELFMAG, SELFMAG) != 0 ||
      image[EI_CLASS] != ELFCLASS64 || image[EI_DATA] != ELFDATA2LSB) {
    return false;
  }
  Elf64_Ehdr header;
  std::memcpy(&header, image.data(), sizeof header);
  if (header.e_shentsize != sizeof(Elf64_Shdr) ||
      !fits(header.e_shoff, uint64_t{header.e_shnum} * sizeof(Elf64_Shdr))) {
    return false;
  }
  auto section = [&](size_t index) {
    Elf64_Shdr s;
    std::memcpy(&s, image.data() + header.e_shoff + index * sizeof(Elf64_Shdr), sizeof s);
    return s;
  };
  for (size_t i = 0; i < header.e_shnum; ++i) {
    const Elf64_Shdr symbols = section(i);
    if (symbols.sh_type != SHT_DYNSYM || symbols.sh_link >= header.e_shnum) continue;
    const Elf64_Shdr strings = section(symbols.sh_link);
    if (!fits(symbols.sh_offset, symbols.sh_size) || !fits(strings.sh_offset, strings.sh_size)) return false;
    for (uint64_t off = 0; off + sizeof(Elf64_Sym) <= symbols.sh_size; off += sizeof(Elf64_Sym)) {
      Elf64_Sym sym;
      std::memcpy(&sym, image.data() + symbols.sh_offset + off, sizeof sym);
      const unsigned bind = ELF64_ST_BIND(sym.st_info);
      if (sym.st_shndx == SHN_UNDEF || (bind != STB_GLOBAL && bind != STB_WEAK) ||
          ELF64_ST_VISIBILITY(sym.st_other) != STV_DEFAULT || sym.st_name >= strings.sh_size) {
        continue;
      }
      const char* name = image.data() + strings.sh_offset + sym.st_name;
      const size_t max = strings.sh_size - sym.st_name;
      if (std::string_view(name, strnlen(name, max)) == symbol) return true;
    }
  }
  return false;
}

void preflight(const fs::path& staged) {
  bool found = false;
  try {
    boost::dll::library_info info(staged);
    for (const std::string& symbol : info.symbols()) {
      if (symbol == WK_PLUGIN_ENTRY_SYMBOL_V1) found = true;
    }
  } catch (const std::exception& e) {
    throw Refused(std::string("not a loadable shared library (") + e.what() + ")");
  }
  if (!found && !dynsym_exports(MappedFile(staged).bytes(), WK_PLUGIN_ENTRY_SYMBOL_V1)) {
    throw Refused("no " WK_PLUGIN_ENTRY_SYMBOL_V1 " symbol: not a worker plugin (ABI 1)");
  }
}

std::string copy_text(const char* text, const char* what, bool required) {
  if (text == nullptr) {
    if (required) throw Refused(std::string(what) + " is NULL");
    return {};
  }
  const size_t len = strnlen(text, kMaxTextLen + 1);
  if (len > kMaxTextLen) throw Refused(std::string(what) + " is longer than 4096 bytes");
  if (required && len == 0) throw Refused(std::string(what) + " is empty");
  return std::string(text, len);
}

std::string version_text(unsigned major, unsigned minor) {
  return std::to_string(major) + "." + std::to_string(minor);
}

LoadedLibrary validate_entry(const wk_plugin_entry* raw, const fs::path& file, const std::string& digest) {
  if (raw == nullptr) throw Refused(WK_PLUGIN_ENTRY_SYMBOL_V1 "() returned NULL");
  if (raw->magic != WK_ENTRY_MAGIC) throw Refused("bad magic in the plugin entry (not a wk_plugin_entry)");
  if (raw->struct_size < kEntrySizeV1_0) {
    throw Refused("plugin entry struct_size " + std::to_string(raw->struct_size) +
                  " is smaller than the ABI 1.0 entry (" + std::to_string(kEntrySizeV1_0) + ")");
  }
  // Copy what this host knows; newer appended fields are ignored.
  wk_plugin_entry entry{};
  std::memcpy(&entry, raw, std::min<size_t>(raw->struct_size, sizeof entry));
  if (entry.abi_major != WK_ABI_MAJOR) {
    throw Refused("plugin ABI major " + std::to_string(entry.abi_major) + " does not match " +
                  WK_PLUGIN_ENTRY_SYMBOL_V1 + " (this host speaks ABI " +
                  version_text(WK_ABI_MAJOR, WK_ABI_MINOR) + ")");
  }
  if (entry.min_host_minor > WK_ABI_MINOR) {
    throw Refused("needs host ABI " + version_text(WK_ABI_MAJOR, entry.min_host_minor) + ", this host is " +
                  version_text(WK_ABI_MAJOR, WK_ABI_MINOR));
  }
  LoadedLibrary lib;
  lib.info.file = file;
  lib.info.sha256 = digest;
  lib.info.plugin_id = copy_text(entry.plugin_id, "plugin_id", true);
  lib.info.plugin_version = copy_text(entry.plugin_version, "plugin_version", false);
  lib.info.build_info = copy_text(entry.build_info, "build_info", false);
  lib.info.abi_major = entry.abi_major;
  lib.info.abi_minor = entry.abi_minor;
  lib.info.min_host_minor = entry.min_host_minor;
  lib.info.flags = entry.flags;
  lib.init = entry.init;
  lib.shutdown = entry.shutdown;
  if (lib.init == nullptr) throw Refused("plugin entry has no init function");
  if (entry.handler_count == 0 || entry.handlers == nullptr) throw Refused("plugin declares no handlers");
  if (entry.handler_stride < kHandlerSizeV1_0) {
    throw Refused("handler_stride " + std::to_string(entry.handler_stride) +
                  " is smaller than the ABI 1.0 handler descriptor (" + std::to_string(kHandlerSizeV1_0) +
                  ")");
  }
  if (entry.handler_count > 4096) throw Refused("more than 4096 handlers");
  std::set<std::string> seen;
  const auto* base = reinterpret_cast<const unsigned char*>(entry.handlers);
  for (uint32_t i = 0; i < entry.handler_count; ++i) {
    wk_handler_desc desc{};
    std::memcpy(&desc, base + size_t{i} * entry.handler_stride,
                std::min<size_t>(entry.handler_stride, sizeof desc));
    LoadedHandler handler;
    handler.info.task_type = copy_text(desc.task_type, "handler task_type", true);
    if (!valid_task_type(handler.info.task_type)) {
      throw Refused("invalid task type \"" + handler.info.task_type + "\" (allowed: [A-Za-z0-9:._-]{1,128})");
    }
    if (!seen.insert(handler.info.task_type).second) {
      throw Refused("task type \"" + handler.info.task_type + "\" is declared twice");
    }
    handler.info.description = copy_text(desc.description, "handler description", false);
    handler.info.flags = desc.flags;
    handler.info.max_concurrency = desc.max_concurrency;
    handler.info.default_timeout_ms = desc.default_timeout_ms;
    handler.run = desc.run;
    handler.on_cancel = desc.on_cancel;
    if (handler.run == nullptr)
      throw Refused("handler \"" + handler.info.task_type + "\" has no run function");
    lib.info.handlers.push_back(handler.info);
    lib.handlers.push_back(std::move(handler));
  }
  return lib;
}

}  // namespace

bool valid_task_type(std::string_view type) {
  if (type.empty() || type.size() > 128) return false;
  for (const char c : type) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ':' ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::optional<std::string> unsafe_permissions(const fs::path& path, bool is_directory) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return "cannot stat: " + std::string(std::strerror(errno));
  if (is_directory ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
    return is_directory ? "not a directory" : "not a regular file (symlinks and devices are refused)";
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    return std::string(is_directory ? "directory " : "") + "writable by group or others (mode " + mode +
           "); run chmod go-w";
  }
  if (st.st_uid != ::geteuid() && st.st_uid != 0) {
    return std::string(is_directory ? "directory " : "") + "owned by uid " + std::to_string(st.st_uid) +
           ", neither this user nor root";
  }
  return std::nullopt;
}

StagingDir::StagingDir(const fs::path& base, bool remove_at_exit) : remove_(remove_at_exit) {
  fs::path parent = base;
  if (parent.empty()) {
    const char* runtime = std::getenv("XDG_RUNTIME_DIR");
    parent = (runtime != nullptr && *runtime != '\0' && ::access(runtime, W_OK) == 0) ? fs::path(runtime)
                                                                                      : fs::path("/tmp");
  }
  std::string pattern =
      (parent / ("wk-plugins-" + std::to_string(::getuid()) + "-" + std::to_string(::getpid()) + "-XXXXXX"))
          .string();
  // mkdtemp creates the directory 0700 and fails rather than reuse an existing path.
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw std::runtime_error("cannot create the plugin staging directory under " + parent.string() + ": " +
                             std::strerror(errno));
  }
  path_ = pattern;
}

StagingDir::~StagingDir() {
  if (!remove_) return;
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

LoadedLibrary load_plugin_file(const fs::path& file, const StagingDir& staging) {
  if (file.extension() != ".so") throw Refused("not a .so file");
  if (auto problem = unsafe_permissions(file, false)) throw Refused(*problem);
  if (auto problem = unsafe_permissions(file.has_parent_path() ? file.parent_path() : fs::path("."), true)) {
    throw Refused(*problem);
  }
  // Everything from here on works on the bytes we hashed, in a directory only we can write.
  const auto [staged, digest] = stage_copy(staging, file);
  struct Unlink {
    const fs::path& path;
    ~Unlink() { ::unlink(path.c_str()); }  // the mapping survives the unlink
  } unlink_staged{staged};

  preflight(staged);

  boost::dll::fs::error_code ec;
  ::dlerror();
  boost::dll::shared_library library(staged,
                                     boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local, ec);
  if (ec || !library.is_loaded()) {
    const char* why = ::dlerror();
    throw Refused("dlopen failed: " + std::string(why != nullptr ? why : ec.message()));
  }
  if (!library.has(WK_PLUGIN_ENTRY_SYMBOL_V1)) {
    RetiredLibraries::keep(std::move(library));
    throw Refused("no " WK_PLUGIN_ENTRY_SYMBOL_V1 " symbol after loading");
  }
  auto& getter = library.get<const wk_plugin_entry*()>(WK_PLUGIN_ENTRY_SYMBOL_V1);
  // From dlopen on, static constructors ran: the image is kept mapped whatever happens next.
  RetiredLibraries::keep(std::move(library));
  return validate_entry(getter(), file, digest);
}

}  // namespace wk::plugins::detail
