#pragma once
// What runner processes write to their stdout and stderr (a plugin's printf, a library's
// warning, a sanitizer's report), turned into log lines of the worker's format: one line per
// line written, stdout at INFO and stderr at WARN, with the plugin file and the runner's pid.
// One thread watches every runner's two pipes; a pipe leaves when its runner (and whatever the
// runner started) has closed it.
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "log/log.hpp"
#include "posix/unique_fd.hpp"

namespace wk::runner {

class OutputRelay {
 public:
  OutputRelay();
  // Relays what is still buffered in the pipes, then stops (runners are gone by then).
  ~OutputRelay();
  OutputRelay(const OutputRelay&) = delete;
  OutputRelay& operator=(const OutputRelay&) = delete;

  // Relays the read end of a pipe: each line becomes `logger.log(level, line, {stream})`.
  void add(posix::UniqueFd pipe, log::Logger logger, log::Level level, std::string stream);

 private:
  struct Source;
  void run();

  posix::UniqueFd wake_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Source>> added_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace wk::runner
