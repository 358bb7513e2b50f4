#include "runner/channel.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace wk::runner {

Channel::Channel(int fd) : fd_(fd) {}

Channel::~Channel() { ::close(fd_); }

bool Channel::send(std::string_view frame) {
  std::unique_lock lock(mu_);
  if (broken_) return false;
  pending_.append(frame);
  return flush_locked(lock);
}

bool Channel::post(wire::Kind kind, uint64_t id, std::string_view body) {
  std::lock_guard lock(mu_);
  if (broken_) return false;
  wire::append_frame(pending_, kind, id, body);
  return true;
}

bool Channel::flush() {
  std::unique_lock lock(mu_);
  if (broken_) return false;
  return flush_locked(lock);
}

bool Channel::flush_locked(std::unique_lock<std::mutex>& lock) {
  // Another thread is writing: it writes what we appended before it leaves.
  if (writing_ || pending_.empty()) return true;
  writing_ = true;
  bool ok = true;
  while (ok && !pending_.empty()) {
    writing_batch_.clear();
    writing_batch_.swap(pending_);
    lock.unlock();
    ok = write_all(writing_batch_);
    lock.lock();
  }
  if (!ok) {
    broken_ = true;
    pending_.clear();
  }
  writing_ = false;
  return ok;
}

bool Channel::write_all(const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

std::string Channel::read_loop(const OnFrame& on_frame, const std::function<void()>& read_done) {
  std::string why;
  while (read_once(on_frame, why)) {
    if (!read_done) continue;
    try {
      read_done();
    } catch (const std::exception& e) {
      return std::string("failed after a read: ") + e.what();
    }
  }
  return why;
}

bool Channel::read_once(const OnFrame& on_frame, std::string& why) {
  // No per-read zeroing or copying: a read goes straight behind what is there, and bytes move
  // only when a frame wraps the buffer's end.
  if (read_buffer_.empty()) read_buffer_.resize(size_t{256} * 1024);
  std::vector<char>& buffer = read_buffer_;
  size_t& begin = read_begin_;
  size_t& end = read_end_;
  while (true) {
    const ssize_t n = ::recv(fd_, buffer.data() + end, buffer.size() - end, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      why = std::string("read failed: ") + std::strerror(errno);
      return false;
    }
    if (n == 0) {
      why = begin == end ? "" : "end of file inside a frame";
      return false;
    }
    end += static_cast<size_t>(n);
    break;
  }
  size_t needed = wire::kHeaderSize;  // bytes the next frame needs in all
  while (end - begin >= wire::kHeaderSize) {
    uint32_t length = 0;
    std::memcpy(&length, buffer.data() + begin, 4);
    if (length < 9 || length > wire::kMaxFrame) {
      why = "malformed frame length " + std::to_string(length);
      return false;
    }
    needed = 4 + size_t{length};
    if (end - begin < needed) break;
    const auto kind = static_cast<wire::Kind>(static_cast<uint8_t>(buffer[begin + 4]));
    uint64_t id = 0;
    std::memcpy(&id, buffer.data() + begin + 5, 8);
    const std::string_view body(buffer.data() + begin + wire::kHeaderSize, length - 9);
    begin += needed;  // before the callback: a frame is consumed even when it throws
    needed = wire::kHeaderSize;
    try {
      on_frame(kind, id, body);
    } catch (const std::exception& e) {
      why = std::string("bad frame: ") + e.what();
      return false;
    }
  }
  if (begin == end) {
    begin = end = 0;
  } else if (buffer.size() - begin < needed) {
    std::memmove(buffer.data(), buffer.data() + begin, end - begin);
    end -= begin;
    begin = 0;
    if (buffer.size() < needed) buffer.resize(needed);
  }
  return true;
}

void Channel::shutdown() {
  {
    std::lock_guard lock(mu_);
    broken_ = true;
  }
  ::shutdown(fd_, SHUT_RDWR);
}

}  // namespace wk::runner
