// ledger: a fixture plugin that uses the database only through the SDK's C++ layer (wk_sdk.hpp):
// parameters with NULL and bytea, typed getters, a committed transaction, a transaction rolled
// back by a handler error, and the effectively-once helper.
//
// Payload (plain text, one word): "commit", "fail" or "once".
#include <wk_sdk.hpp>

#include <stdexcept>
#include <string>

namespace {

constexpr char kBlob[] = {'\x00', '\xff', 'a', '\x01'};

class Ledger {
 public:
  explicit Ledger(wk::Context& ctx) {
    ctx.migrate({{1, "ledger",
                  "CREATE TABLE sdk_ledger (id text PRIMARY KEY, note text, blob bytea, amount bigint,"
                  " ratio double precision, ok boolean)"},
                 {2, "ledger effects", "CREATE TABLE sdk_ledger_effects (task_id text NOT NULL)"}});
  }

  wk::Outcome write(wk::TaskContext& tc, const wk::Task& task) {
    const std::string mode(task.payload);
    if (mode == "once") return once(tc, task);
    wk::Transaction tx = tc.begin();
    tx.query("INSERT INTO sdk_ledger (id, note, blob, amount, ratio, ok) VALUES ($1, $2, $3, $4, $5, $6)",
             {wk::Param::text(task.id), wk::Param::null(), wk::Param::bytes(kBlob, sizeof kBlob),
              wk::Param::int64(-9000000000LL), wk::Param::float64(0.25), wk::Param::boolean(true)});
    if (mode == "fail") throw std::runtime_error("ledger refused the entry");  // the guard rolls back
    const wk::Rows rows = tx.query("SELECT id, note, blob, amount, ratio, ok FROM sdk_ledger WHERE id = $1",
                                   {wk::Param::text(task.id)});
    if (rows.size() != 1) return wk::Outcome::fail("missing", "the row just inserted is not there");
    const bool note_is_null = !rows.text(0, 1).has_value();
    const std::string blob = rows.bytes(0, 2).value_or("?");
    const long long amount = rows.int64(0, 3).value_or(0);
    const double ratio = rows.float64(0, 4).value_or(-1);
    const bool ok = rows.boolean(0, 5).value_or(false);
    tx.commit();
    tc.write_result("note_null=" + std::to_string(note_is_null) +
                    " blob_ok=" + std::to_string(blob == std::string(kBlob, sizeof kBlob)) +
                    " amount=" + std::to_string(amount) + " ratio=" + std::to_string(ratio) +
                    " ok=" + std::to_string(ok) + " columns=" + std::string(rows.column_name(3)));
    return wk::Outcome::ok();
  }

 private:
  static wk::Outcome once(wk::TaskContext& tc, const wk::Task& task) {
    wk::Transaction tx = tc.begin();
    if (!tx.once(std::string(task.id) + ":ledger")) {
      tc.write_result("already done");
      return wk::Outcome::ok();  // the guard rolls back the empty transaction
    }
    tx.query("INSERT INTO sdk_ledger_effects (task_id) VALUES ($1)", {wk::Param::text(task.id)});
    tx.commit();
    tc.write_result("done");
    return wk::Outcome::ok();
  }
};

}  // namespace

WK_PLUGIN_BEGIN(Ledger, "dev.autodevs.test.ledger", "1.0.0")
WK_HANDLER("ledger:write", &Ledger::write)
WK_PLUGIN_END()
