#pragma once
// Internal: an elastic pool of threads for blocking work (a runner's tasks, the worker's service
// of runner calls). A job never waits for a free thread: when every thread is busy, a new one
// starts, and it stays for later jobs. Whatever bounds the work (the worker's slots, the tasks
// in flight) bounds the threads.
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace wk::runner {

class ElasticThreads {
 public:
  // `on_start` runs first on every new thread (e.g. to set up a signal stack).
  explicit ElasticThreads(std::function<void()> on_start = {}) : on_start_(std::move(on_start)) {}
  // Runs the jobs already queued, then joins every thread.
  ~ElasticThreads() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  ElasticThreads(const ElasticThreads&) = delete;
  ElasticThreads& operator=(const ElasticThreads&) = delete;

  void submit(std::function<void()> job) {
    std::lock_guard lock(mu_);
    jobs_.push_back(std::move(job));
    if (jobs_.size() > idle_) {
      threads_.emplace_back([this] { loop(); });
    } else {
      cv_.notify_one();
    }
  }

 private:
  void loop() {
    if (on_start_) on_start_();
    std::unique_lock lock(mu_);
    while (true) {
      ++idle_;
      cv_.wait(lock, [&] { return !jobs_.empty() || stopping_; });
      --idle_;
      if (jobs_.empty()) return;  // stopping
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
  }

  std::function<void()> on_start_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  size_t idle_ = 0;
  bool stopping_ = false;
};

}  // namespace wk::runner
