// Fixture plugin for the process-level fault tests (tests/system/faults). Every handler is
// driven by files, so a test in another process decides when a task may finish:
//
//   fault:block     payload = a file path. Waits until that file exists (then succeeds) or the
//                   task is cancelled (then acknowledges the cancellation). Before waiting it
//                   creates "<path>.started-<attempt>" so a test can see which attempt runs, and
//                   "<path>.returned-<attempt>" just before it returns success.
//   fault:quick     succeeds at once (proves a host keeps serving).
//   fault:fail      fails at once without retry (archived: floods the archive).
//   fault:db        runs one short query (pg_sleep 50 ms, to hold a pool connection for a
//                   while). A database that cannot be reached is a retryable failure with
//                   "database unavailable: ..." in error_msg.
//   fault:record    payload = a file path; appends "<task id>\n" to it (one write, O_APPEND: lines
//                   of concurrent runs never mix) and succeeds. A test counts the runs of each task.
//   fault:chain     payload = "<queue>\n<file path>"; enqueues a fault:record follow-up for the file
//                   on that queue, with the fixed id "followup-<task id>", and succeeds.
//   fault:span      payload = "<file path>\n<ms>"; sleeps ms, then appends "<start> <end> <task id>\n"
//                   (wall clock, microseconds since the epoch) to the file and succeeds: the
//                   flow-control tests measure how many ran at once from the handlers' own times.
//   fault:stubborn  payload = a file path; creates "<path>.started-<attempt>", then never returns
//                   and ignores cancellation (blocks until the process exits).
#include <fcntl.h>
#include <unistd.h>
#include <wk_sdk.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

namespace {

using namespace std::chrono_literals;

class Faults {
 public:
  explicit Faults(wk::Context&) {}

  wk::Outcome block(wk::TaskContext& tc, const wk::Task& task) {
    const std::filesystem::path release{std::string(task.payload)};
    std::ofstream(release.string() + ".started-" + std::to_string(task.attempt)) << task.id;
    std::error_code ec;
    while (!std::filesystem::exists(release, ec)) {
      if (tc.wait_cancelled(20ms) != WK_CANCEL_NONE) return wk::Outcome::cancelled("fault:block cancelled");
    }
    std::ofstream(release.string() + ".returned-" + std::to_string(task.attempt)) << task.id;
    return wk::Outcome::ok();
  }

  wk::Outcome quick(wk::TaskContext&, const wk::Task&) { return wk::Outcome::ok(); }
  wk::Outcome record(wk::TaskContext&, const wk::Task& task) {
    const std::string path(task.payload);
    const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return wk::Outcome::fail("fault", "fault:record cannot open " + path);
    const std::string line = std::string(task.id) + "\n";
    const bool whole = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    ::close(fd);
    return whole ? wk::Outcome::ok() : wk::Outcome::fail("fault", "fault:record short write");
  }
  wk::Outcome span(wk::TaskContext&, const wk::Task& task) {
    const auto micros = [] {
      return std::chrono::duration_cast<std::chrono::microseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
          .count();
    };
    const long long start = micros();
    const std::string payload(task.payload);
    const size_t newline = payload.find('\n');
    if (newline == std::string::npos) return wk::Outcome::fail("fault", "fault:span wants file\\nms");
    std::this_thread::sleep_for(std::chrono::milliseconds(std::stoll(payload.substr(newline + 1))));
    const std::string path = payload.substr(0, newline);
    const std::string line =
        std::to_string(start) + " " + std::to_string(micros()) + " " + std::string(task.id) + "\n";
    const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return wk::Outcome::fail("fault", "fault:span cannot open " + path);
    const bool whole = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    ::close(fd);
    return whole ? wk::Outcome::ok() : wk::Outcome::fail("fault", "fault:span short write");
  }

  wk::Outcome fail(wk::TaskContext&, const wk::Task&) { return wk::Outcome::fail("fault", "fault:fail"); }

  wk::Outcome db(wk::TaskContext& tc, const wk::Task&) {
    try {
      auto rows = tc.query("SELECT pg_sleep(0.05)");
      (void)rows;
    } catch (const wk::HostError& e) {
      if (e.status() == WK_E_UNAVAILABLE)
        return wk::Outcome::retry(std::string("database unavailable: ") + e.what(), "db_down");
      throw;
    }
    return wk::Outcome::ok();
  }

  wk::Outcome chain(wk::TaskContext& tc, const wk::Task& task) {
    const std::string payload(task.payload);
    const size_t newline = payload.find('\n');
    if (newline == std::string::npos) return wk::Outcome::fail("fault", "fault:chain wants queue\\nfile");
    tc.enqueue(
        "fault:record", payload.substr(newline + 1),
        wk::EnqueueOptions().queue(payload.substr(0, newline)).task_id("followup-" + std::string(task.id)));
    return wk::Outcome::ok();
  }
  wk::Outcome stubborn(wk::TaskContext&, const wk::Task& task) {
    std::ofstream(std::string(task.payload) + ".started-" + std::to_string(task.attempt)) << task.id;
    for (;;) std::this_thread::sleep_for(50ms);  // deliberately deaf to cancellation
  }
};

}  // namespace

WK_PLUGIN_BEGIN(Faults, "test.faults", "0.0.1")
WK_HANDLER("fault:block", &Faults::block)
WK_HANDLER("fault:quick", &Faults::quick)
WK_HANDLER("fault:record", &Faults::record)
WK_HANDLER("fault:chain", &Faults::chain)
WK_HANDLER("fault:span", &Faults::span)
WK_HANDLER("fault:fail", &Faults::fail)
WK_HANDLER("fault:db", &Faults::db)
WK_HANDLER("fault:stubborn", &Faults::stubborn)
WK_PLUGIN_END()
