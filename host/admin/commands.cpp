#include "admin/commands.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <ctime>
#include <functional>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "admin/inspector.hpp"
#include "digest/digest.hpp"

namespace wk::admin {

namespace {

using json = nlohmann::json;

constexpr int kFailed = 1;
constexpr int kUsage = 2;

std::string iso_time(int64_t unix_seconds) {
  if (unix_seconds <= 0) return "-";
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Bytes shown in a terminal: payloads are JSON text in practice; anything else is summarised.
std::string printable(const std::string& bytes) {
  if (!asynq::is_valid_utf8(bytes)) return "(" + std::to_string(bytes.size()) + " bytes, binary)";
  return bytes;
}

// A left-aligned text table: one header row, columns as wide as their widest cell.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print(std::ostream& out) const {
    std::vector<size_t> width(rows_[0].size(), 0);
    for (const auto& row : rows_) {
      for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
    }
    for (const auto& row : rows_) {
      std::string line;
      for (size_t i = 0; i < row.size(); ++i) {
        line += row[i];
        if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
      }
      out << line << "\n";
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

json task_json(const TaskInfo& t) {
  json headers = json::object();
  for (const auto& [k, v] : t.msg.headers) headers[k] = v;
  json j{{"id", t.msg.id},
         {"type", t.msg.type},
         {"queue", t.msg.queue},
         {"state", t.state},
         {"max_retry", t.msg.retry},
         {"retried", t.msg.retried},
         {"last_error", t.msg.error_msg},
         {"last_failed_at", t.msg.last_failed_at},
         {"timeout_seconds", t.msg.timeout},
         {"deadline", t.msg.deadline},
         {"completed_at", t.msg.completed_at},
         {"retention_seconds", t.msg.retention},
         {"payload", printable(t.msg.payload)},
         {"result", printable(t.result)},
         {"headers", headers}};
  j["next_process_at"] = t.next_process_at ? json(*t.next_process_at) : json(nullptr);
  if (!t.undecodable.empty()) j["undecodable"] = t.undecodable;
  if (!t.stored.empty()) j["stored_hex"] = digest::hex(t.stored);
  return j;
}

// Runs `body` with an Inspector; maps every failure to a message and an exit code.
int with_inspector(const redis::Settings& settings, std::ostream& err,
                   const std::function<int(Inspector&)>& body) {
  try {
    Inspector inspector(settings);
    return body(inspector);
  } catch (const UsageError& e) {
    err << "worker: " << e.what() << "\n";
    return kUsage;
  } catch (const Error& e) {
    err << "worker: " << e.what() << "\n";
    return kFailed;
  } catch (const redis::Error& e) {
    if (e.is_connection()) {
      err << "worker: cannot reach Redis at " << settings.address() << ": " << e.what() << "\n";
    } else {
      err << "worker: Redis error: " << e.what() << "\n";
    }
    return kFailed;
  } catch (const std::exception& e) {
    err << "worker: " << e.what() << "\n";
    return kFailed;
  }
}

void done(std::ostream& out, bool as_json, const std::string& message, json extra = json::object()) {
  if (as_json) {
    extra["ok"] = true;
    extra["message"] = message;
    out << extra.dump() << "\n";
  } else {
    out << message << "\n";
  }
}

}  // namespace

int run_stats(const redis::Settings& redis, const StatsOptions& o, std::ostream& out, std::ostream& err) {
  return with_inspector(redis, err, [&](Inspector& in) {
    std::vector<std::string> queues = o.queue.empty() ? in.queues() : std::vector<std::string>{o.queue};
    std::vector<QueueStats> stats;
    stats.reserve(queues.size());
    for (const auto& q : queues) stats.push_back(in.stats(q));
    if (o.json) {
      json arr = json::array();
      for (const auto& s : stats) {
        arr.push_back({{"queue", s.queue},
                       {"size", s.size()},
                       {"pending", s.pending},
                       {"active", s.active},
                       {"scheduled", s.scheduled},
                       {"retry", s.retry},
                       {"archived", s.archived},
                       {"completed", s.completed},
                       {"processed_today", s.processed_today},
                       {"failed_today", s.failed_today},
                       {"processed_total", s.processed_total},
                       {"failed_total", s.failed_total},
                       {"paused", s.paused},
                       {"latency_ms", s.latency.count()}});
      }
      out << json{{"queues", arr}}.dump(2) << "\n";
      return 0;
    }
    if (stats.empty()) {
      out << "No queues (a queue appears once a producer enqueues to it).\n";
      return 0;
    }
    Table t({"QUEUE", "STATE", "SIZE", "PENDING", "ACTIVE", "SCHEDULED", "RETRY", "ARCHIVED", "COMPLETED",
             "PROCESSED TODAY", "FAILED TODAY", "LATENCY"});
    for (const auto& s : stats) {
      std::ostringstream latency;
      latency << std::fixed << std::setprecision(3) << static_cast<double>(s.latency.count()) / 1000.0 << "s";
      t.add({s.queue, s.paused ? "paused" : "run", std::to_string(s.size()), std::to_string(s.pending),
             std::to_string(s.active), std::to_string(s.scheduled), std::to_string(s.retry),
             std::to_string(s.archived), std::to_string(s.completed), std::to_string(s.processed_today),
             std::to_string(s.failed_today), latency.str()});
    }
    t.print(out);
    return 0;
  });
}

int run_pause(const redis::Settings& redis, const std::string& queue, std::ostream& out, std::ostream& err) {
  return with_inspector(redis, err, [&](Inspector& in) {
    in.pause(queue);
    out << "Paused queue \"" << queue << "\"\n";
    return 0;
  });
}

int run_resume(const redis::Settings& redis, const std::string& queue, std::ostream& out, std::ostream& err) {
  return with_inspector(redis, err, [&](Inspector& in) {
    in.resume(queue);
    out << "Resumed queue \"" << queue << "\"\n";
    return 0;
  });
}

int run_list(const redis::Settings& redis, const ListOptions& o, std::ostream& out, std::ostream& err) {
  return with_inspector(redis, err, [&](Inspector& in) {
    const auto tasks = in.list(o.queue, o.state, o.limit);
    if (o.json) {
      json arr = json::array();
      for (const auto& t : tasks) arr.push_back(task_json(t));
      out << json{{"tasks", arr}}.dump(2) << "\n";
      return 0;
    }
    if (tasks.empty()) {
      out << "No " << o.state << " tasks in queue \"" << o.queue << "\"\n";
      return 0;
    }
    Table t({"ID", "TYPE", "RETRIED", "WHEN", "LAST ERROR", "PAYLOAD"});
    for (const auto& task : tasks) {
      std::string payload = printable(task.msg.payload);
      if (!task.undecodable.empty()) payload = "(undecodable message: see tasks show)";
      if (payload.size() > 60) payload = payload.substr(0, 57) + "...";
      t.add({task.msg.id, task.msg.type,
             std::to_string(task.msg.retried) + "/" + std::to_string(task.msg.retry),
             o.state == "pending" || o.state == "active" ? "-" : iso_time(task.score),
             task.msg.error_msg.empty() ? "-" : task.msg.error_msg, payload});
    }
    t.print(out);
    return 0;
  });
}

int run_show(const redis::Settings& redis, const TaskOptions& o, std::ostream& out, std::ostream& err) {
  return with_inspector(redis, err, [&](Inspector& in) {
    auto t = in.show(o.queue, o.id);
    if (!o.raw && t.undecodable.empty()) t.stored.clear();
    if (o.json) {
      out << task_json(t).dump(2) << "\n";
      return 0;
    }
    Table table({"FIELD", "VALUE"});
    if (!t.undecodable.empty()) {
      table.add({"id", t.msg.id});
      table.add({"queue", t.msg.queue});
      table.add({"state", t.state});
      table.add({"message", "undecodable: " + t.undecodable});
      table.add({"stored (hex)", digest::hex(t.stored)});
      table.print(out);
      return 0;
    }
    table.add({"id", t.msg.id});
    table.add({"type", t.msg.type});
    table.add({"queue", t.msg.queue});
    table.add({"state", t.state});
    table.add({"retried", std::to_string(t.msg.retried) + " of " + std::to_string(t.msg.retry)});
    table.add({"next process at", t.next_process_at ? iso_time(*t.next_process_at) : "-"});
    table.add({"last error", t.msg.error_msg.empty() ? "-" : t.msg.error_msg});
    table.add({"last failed at", iso_time(t.msg.last_failed_at)});
    table.add({"timeout", t.msg.timeout > 0 ? std::to_string(t.msg.timeout) + "s" : "-"});
    table.add({"deadline", iso_time(t.msg.deadline)});
    table.add({"completed at", iso_time(t.msg.completed_at)});
    for (const auto& [k, v] : t.msg.headers) table.add({"header " + k, v});
    table.add({"payload", printable(t.msg.payload)});
    table.add({"result", t.result.empty() ? "-" : printable(t.result)});
    if (o.raw) table.add({"stored (hex)", digest::hex(t.stored)});
    table.print(out);
    return 0;
  });
}

int run_retry(const redis::Settings& redis, const TaskOptions& o, std::ostream& out, std::ostream& err) {
  return with_inspector(redis, err, [&](Inspector& in) {
    in.run(o.queue, o.id);
    done(out, o.json, "Task " + o.id + " is pending again", {{"id", o.id}, {"state", "pending"}});
    return 0;
  });
}

int run_archive(const redis::Settings& redis, const TaskOptions& o, std::ostream& out, std::ostream& err) {
  return with_inspector(redis, err, [&](Inspector& in) {
    in.archive(o.queue, o.id);
    done(out, o.json, "Task " + o.id + " archived", {{"id", o.id}, {"state", "archived"}});
    return 0;
  });
}

int run_delete(const redis::Settings& redis, const TaskOptions& o, std::ostream& out, std::ostream& err) {
  return with_inspector(redis, err, [&](Inspector& in) {
    in.remove(o.queue, o.id);
    done(out, o.json, "Task " + o.id + " deleted", {{"id", o.id}});
    return 0;
  });
}

int run_retry_all(const redis::Settings& redis, const BulkOptions& o, std::ostream& out, std::ostream& err) {
  return with_inspector(redis, err, [&](Inspector& in) {
    const auto n = in.run_all(o.queue, o.state);
    done(out, o.json, std::to_string(n) + " " + o.state + " tasks moved to pending", {{"count", n}});
    return 0;
  });
}

int run_delete_all(const redis::Settings& redis, const BulkOptions& o, std::ostream& out, std::ostream& err) {
  return with_inspector(redis, err, [&](Inspector& in) {
    const auto n = in.delete_all(o.queue, o.state);
    done(out, o.json, std::to_string(n) + " " + o.state + " tasks deleted", {{"count", n}});
    return 0;
  });
}

int run_servers(const redis::Settings& redis, bool as_json, std::ostream& out, std::ostream& err) {
  return with_inspector(redis, err, [&](Inspector& in) {
    const auto servers = in.servers();
    const auto queues_text = [](const asynq::ServerInfo& info) {
      std::string text;
      for (const auto& [q, w] : info.queues) text += (text.empty() ? "" : ",") + q + ":" + std::to_string(w);
      return text;
    };
    if (as_json) {
      json arr = json::array();
      for (const auto& s : servers) {
        json active = json::array();
        for (const auto& w : s.active) {
          json task = {{"task_id", w.task_id},
                       {"task_type", w.task_type},
                       {"queue", w.queue},
                       {"started_at", w.started_at}};
          if (w.progress_done != 0 || w.progress_total != 0 || !w.progress_note.empty()) {
            task["progress"] = {
                {"done", w.progress_done}, {"total", w.progress_total}, {"note", w.progress_note}};
          }
          active.push_back(std::move(task));
        }
        json queues = json::object();
        for (const auto& [q, w] : s.info.queues) queues[q] = w;
        arr.push_back({{"host", s.info.host},
                       {"pid", s.info.pid},
                       {"server_id", s.info.server_id},
                       {"status", s.info.status},
                       {"concurrency", s.info.concurrency},
                       {"active_workers", s.info.active_worker_count},
                       {"queues", queues},
                       {"strict_priority", s.info.strict_priority},
                       {"started_at", s.info.start_time ? s.info.start_time->seconds : 0},
                       {"active", active}});
      }
      out << json{{"servers", arr}}.dump(2) << "\n";
      return 0;
    }
    if (servers.empty()) {
      out << "No running servers\n";
      return 0;
    }
    Table t({"HOST", "PID", "STATUS", "ACTIVE WORKERS", "QUEUES", "STARTED"});
    for (const auto& s : servers) {
      t.add({s.info.host, std::to_string(s.info.pid), s.info.status,
             std::to_string(s.info.active_worker_count) + "/" + std::to_string(s.info.concurrency),
             queues_text(s.info), iso_time(s.info.start_time ? s.info.start_time->seconds : 0)});
    }
    t.print(out);
    return 0;
  });
}

// ---- command line ---------------------------------------------------------------------------

struct Commands::State {
  StatsOptions stats;
  ListOptions list;
  TaskOptions task;
  BulkOptions bulk;
  std::string queue;  // pause / resume
  bool json = false;  // pause / resume / servers
  std::function<int(const redis::Settings&, std::ostream&, std::ostream&)> chosen;
};

Commands::Commands(CLI::App& app) : state_(std::make_unique<State>()) {
  State& s = *state_;
  const auto choose = [&s](CLI::App* cmd, auto fn) {
    cmd->fallthrough();  // global flags (--env-file ...) may follow the subcommand
    cmd->final_callback([&s, fn] { s.chosen = fn; });
  };

  auto* stats = app.add_subcommand("stats", "Queue sizes, today's processed/failed counts, latency, paused");
  stats->add_option("--queue", s.stats.queue, "Only this queue (default: every queue)");
  stats->add_flag("--json", s.stats.json, "JSON output");
  choose(stats, [&s](const redis::Settings& r, std::ostream& o, std::ostream& e) {
    return run_stats(r, s.stats, o, e);
  });

  auto* queues = app.add_subcommand("queues", "Pause or resume a queue");
  queues->require_subcommand(1);
  queues->fallthrough();
  auto* pause =
      queues->add_subcommand("pause", "Stop every worker (ours and asynq's) from taking tasks of QUEUE");
  pause->add_option("queue", s.queue, "Queue name")->required();
  choose(pause, [&s](const redis::Settings& r, std::ostream& o, std::ostream& e) {
    return run_pause(r, s.queue, o, e);
  });
  auto* resume = queues->add_subcommand("resume", "Let workers take tasks of QUEUE again");
  resume->add_option("queue", s.queue, "Queue name")->required();
  choose(resume, [&s](const redis::Settings& r, std::ostream& o, std::ostream& e) {
    return run_resume(r, s.queue, o, e);
  });

  auto* tasks = app.add_subcommand("tasks", "List, inspect and change tasks");
  tasks->require_subcommand(1);
  tasks->fallthrough();
  auto* list = tasks->add_subcommand("list", "List tasks of one queue in one state, oldest first");
  list->add_option("--queue", s.list.queue, "Queue")->required();
  list->add_option("--state", s.list.state, "pending, active, scheduled, retry, archived or completed")
      ->required();
  list->add_option("--limit", s.list.limit, "At most this many tasks")->capture_default_str();
  list->add_flag("--json", s.list.json, "JSON output");
  choose(list, [&s](const redis::Settings& r, std::ostream& o, std::ostream& e) {
    return run_list(r, s.list, o, e);
  });

  const auto task_command = [&](const char* name, const char* help, auto fn) {
    auto* cmd = tasks->add_subcommand(name, help);
    cmd->add_option("--queue", s.task.queue, "Queue")->required();
    cmd->add_option("id", s.task.id, "Task id")->required();
    cmd->add_flag("--json", s.task.json, "JSON output");
    choose(cmd, [&s, fn](const redis::Settings& r, std::ostream& o, std::ostream& e) {
      return fn(r, s.task, o, e);
    });
    return cmd;
  };
  task_command("show", "Show one task (an undecodable message is shown in hex)", &run_show)
      ->add_flag("--raw", s.task.raw, "Also show the stored message's bytes in hex");
  task_command("retry", "Run a scheduled, retry or archived task now (moves it to pending)", &run_retry);
  task_command("archive", "Archive a task that is not active", &run_archive);
  task_command("delete", "Delete a task that is not active (releases its unique lock)", &run_delete);

  const auto bulk_command = [&](const char* name, const char* help, auto fn) {
    auto* cmd = tasks->add_subcommand(name, help);
    cmd->add_option("--queue", s.bulk.queue, "Queue")->required();
    cmd->add_option("--state", s.bulk.state, "archived (also scheduled, retry; delete-all: completed)")
        ->required();
    cmd->add_flag("--json", s.bulk.json, "JSON output");
    choose(cmd, [&s, fn](const redis::Settings& r, std::ostream& o, std::ostream& e) {
      return fn(r, s.bulk, o, e);
    });
  };
  bulk_command("retry-all", "Move every task of a state to pending", &run_retry_all);
  bulk_command("delete-all", "Delete every task of a state", &run_delete_all);

  auto* servers =
      app.add_subcommand("servers", "Running workers (ours and asynq servers) and their active tasks");
  servers->add_flag("--json", s.json, "JSON output");
  choose(servers, [&s](const redis::Settings& r, std::ostream& o, std::ostream& e) {
    return run_servers(r, s.json, o, e);
  });
}

Commands::~Commands() = default;

bool Commands::selected() const { return static_cast<bool>(state_->chosen); }

int Commands::run(const redis::Settings& redis, std::ostream& out, std::ostream& err) const {
  if (!state_->chosen) return kUsage;
  return state_->chosen(redis, out, err);
}

}  // namespace wk::admin
