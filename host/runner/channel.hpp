#pragma once
// Internal: one end of the worker <-> runner socket (a SOCK_STREAM socketpair).
//
// Senders on any thread hand whole frames to send(); while one of them is writing, the others
// only append to a buffer that the writer flushes before it leaves, so a burst of completions
// (or of task starts) costs one write() instead of one per frame. post() + flush() let one
// sender batch its own frames the same way (the worker starts a round's tasks so). One thread runs
// read_loop(), which reads as much as the socket has and hands each complete frame to a callback.
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "runner/wire.hpp"

namespace wk::runner {

class Channel {
 public:
  using OnFrame = std::function<void(wire::Kind kind, uint64_t id, std::string_view body)>;

  explicit Channel(int fd);  // takes ownership
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Queues `frame` (from wire::frame) and writes it, possibly with others. False when the peer is
  // gone or the channel was shut down; the frame is then dropped.
  bool send(std::string_view frame);
  bool send(wire::Kind kind, uint64_t id, std::string_view body = {}) {
    return post(kind, id, body) && flush();
  }
  // Queues a frame without writing it: the next flush() (or send(), on any thread) writes it with
  // every other frame queued by then, in one write.
  bool post(wire::Kind kind, uint64_t id, std::string_view body = {});
  bool flush();
  // Reads frames until end of file, an error, a malformed frame or a throwing callback; returns
  // why it stopped ("" at a clean end of file). `read_done`, when given, runs after the frames
  // of each read, before the next read (which may block).
  std::string read_loop(const OnFrame& on_frame, const std::function<void()>& read_done = {});
  // One read: waits for bytes, then hands each complete frame to `on_frame`. False when reading
  // is over, with the reason in `why` ("" at a clean end of file). Several threads may read in
  // turn (never two at once): the bytes of a frame not yet complete are kept for the next read.
  bool read_once(const OnFrame& on_frame, std::string& why);
  // Ends both directions: read_loop returns, later sends fail.
  void shutdown();

 private:
  bool write_all(const std::string& bytes);
  bool flush_locked(std::unique_lock<std::mutex>& lock);

  const int fd_;
  // The reader's: [read_begin_, read_end_) of read_buffer_ holds bytes not parsed yet.
  std::vector<char> read_buffer_;
  size_t read_begin_ = 0;
  size_t read_end_ = 0;
  std::mutex mu_;
  std::string pending_;        // frames waiting for the current (or next) writer
  std::string writing_batch_;  // the writer's: what it writes now (kept for its capacity)
  bool writing_ = false;
  bool broken_ = false;
};

}  // namespace wk::runner
