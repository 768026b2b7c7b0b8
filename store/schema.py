"""The ledger's schema, as append-only migrations applied when the store opens.

Each migration is a named function applied once, in one transaction with its record
(sqlite-utils ``Migrations``). Never edit or reorder a released migration: add the next one.
JSON columns hold canonical JSON text.

Rows of the vouched tables (``vouch.VOUCHED``) are vouched for by events. Adding a nullable
column keeps every vouch valid (NULL columns are not digested); a migration that changes vouched
rows otherwise (a NOT NULL column with a default, a rewrite of values) must end with
``vouch_all_rows`` and say in its note why those rows are trusted.
"""

from __future__ import annotations

import datetime as dt

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from .vouch import vouch_all_rows

migrations = Migrations("planegate")


@migrations()
def m001_foundation(db: Database) -> None:
    """Runs, frozen requirement and architecture versions, the task graph, and the event chain."""
    db.executescript(
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            repo TEXT NOT NULL,
            goal TEXT NOT NULL,
            base_ref TEXT NOT NULL,
            base_sha TEXT NOT NULL,
            integration_branch TEXT NOT NULL,
            stage TEXT NOT NULL,
            policy TEXT NOT NULL,
            policy_sha256 TEXT NOT NULL,
            requirements_version INTEGER NOT NULL DEFAULT 0,
            architecture_version INTEGER NOT NULL DEFAULT 0,
            graph_version INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX runs_created ON runs (created_at);

        CREATE TABLE requirement_versions (
            run_id TEXT NOT NULL REFERENCES runs (id),
            version INTEGER NOT NULL,
            content_sha256 TEXT NOT NULL,
            reason TEXT,
            body TEXT NOT NULL,
            frozen_at TEXT NOT NULL,
            PRIMARY KEY (run_id, version)
        );

        CREATE TABLE architecture_versions (
            run_id TEXT NOT NULL REFERENCES runs (id),
            version INTEGER NOT NULL,
            content_sha256 TEXT NOT NULL,
            reason TEXT,
            body TEXT NOT NULL,
            frozen_at TEXT NOT NULL,
            PRIMARY KEY (run_id, version)
        );

        CREATE TABLE graph_versions (
            run_id TEXT NOT NULL REFERENCES runs (id),
            version INTEGER NOT NULL,
            content_sha256 TEXT NOT NULL,
            body TEXT NOT NULL,
            registered_at TEXT NOT NULL,
            PRIMARY KEY (run_id, version)
        );

        CREATE TABLE tasks (
            run_id TEXT NOT NULL REFERENCES runs (id),
            id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            title TEXT NOT NULL,
            goal TEXT NOT NULL,
            status TEXT NOT NULL,
            wave INTEGER NOT NULL,
            depends_on TEXT NOT NULL,
            scope TEXT NOT NULL,
            requirements TEXT NOT NULL,
            acceptance TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (run_id, id)
        );
        CREATE INDEX tasks_by_status ON tasks (run_id, status, seq);

        CREATE TABLE task_edges (
            run_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            depends_on TEXT NOT NULL,
            PRIMARY KEY (run_id, task_id, depends_on)
        );
        CREATE INDEX task_edges_by_dependency ON task_edges (run_id, depends_on);

        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            run_id TEXT,
            task_id TEXT,
            kind TEXT NOT NULL,
            actor TEXT NOT NULL,
            at TEXT NOT NULL,
            payload TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX events_by_run ON events (run_id, id);
        """
    )


@migrations()
def m002_execution(db: Database) -> None:
    """Dispatch and leases on tasks, durable jobs, evidence, artifacts, risks, checkpoints."""
    db.executescript(
        """
        ALTER TABLE tasks ADD COLUMN executor TEXT;
        ALTER TABLE tasks ADD COLUMN dispatched_by TEXT;
        ALTER TABLE tasks ADD COLUMN branch TEXT;
        ALTER TABLE tasks ADD COLUMN worktree TEXT;
        ALTER TABLE tasks ADD COLUMN base_sha TEXT;
        ALTER TABLE tasks ADD COLUMN lease_owner TEXT;
        ALTER TABLE tasks ADD COLUMN lease_expires TEXT;
        ALTER TABLE tasks ADD COLUMN dispatched_at TEXT;
        ALTER TABLE tasks ADD COLUMN accepted_at TEXT;
        ALTER TABLE tasks ADD COLUMN accepted_sha TEXT;
        ALTER TABLE tasks ADD COLUMN merge_sha TEXT;
        ALTER TABLE tasks ADD COLUMN checkpoint INTEGER;
        ALTER TABLE tasks ADD COLUMN cancel_reason TEXT;

        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            task_id TEXT,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            payload TEXT NOT NULL,
            result TEXT,
            error TEXT,
            progress TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            lease_owner TEXT,
            lease_expires TEXT,
            heartbeat_at TEXT,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT
        );
        CREATE INDEX jobs_by_status ON jobs (status, id);
        CREATE INDEX jobs_by_task ON jobs (run_id, task_id, id);

        CREATE TABLE evidence (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            task_id TEXT,
            kind TEXT NOT NULL,
            label TEXT NOT NULL,
            summary TEXT NOT NULL,
            command TEXT,
            exit_code INTEGER,
            duration_ms INTEGER,
            head_sha TEXT,
            diff_sha256 TEXT,
            job_id INTEGER,
            created_at TEXT NOT NULL
        );
        CREATE INDEX evidence_by_task ON evidence (run_id, task_id, id);

        CREATE TABLE artifacts (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            task_id TEXT,
            owner TEXT NOT NULL,
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX artifacts_by_owner ON artifacts (owner);

        CREATE TABLE risks (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            task_id TEXT,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL,
            event_id INTEGER NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX risks_by_run ON risks (run_id, id);

        CREATE TABLE checkpoints (
            run_id TEXT NOT NULL,
            n INTEGER NOT NULL,
            tag TEXT NOT NULL,
            sha TEXT NOT NULL,
            task_id TEXT,
            created_at TEXT NOT NULL,
            reverted_at TEXT,
            PRIMARY KEY (run_id, n)
        );
        """
    )


@migrations()
def m003_review(db: Database) -> None:
    """Reviews and their findings, and human approvals."""
    db.executescript(
        """
        CREATE TABLE reviews (
            id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            task_id TEXT,
            nonce TEXT NOT NULL,
            reviewer TEXT NOT NULL,
            status TEXT NOT NULL,
            verdict TEXT,
            summary TEXT,
            base_sha TEXT NOT NULL,
            head_sha TEXT NOT NULL,
            diff_sha256 TEXT NOT NULL,
            requirements_version INTEGER NOT NULL,
            executor TEXT,
            conversation_url TEXT,
            job_id INTEGER,
            reply TEXT,
            error TEXT,
            created_at TEXT NOT NULL,
            completed_at TEXT
        );
        CREATE INDEX reviews_by_task ON reviews (run_id, task_id, created_at);

        CREATE TABLE findings (
            review_id TEXT NOT NULL REFERENCES reviews (id),
            idx INTEGER NOT NULL,
            severity TEXT NOT NULL,
            file TEXT,
            line INTEGER,
            title TEXT NOT NULL,
            detail TEXT,
            suggestion TEXT,
            PRIMARY KEY (review_id, idx)
        );

        CREATE TABLE approvals (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            by TEXT NOT NULL,
            via TEXT NOT NULL,
            head_sha TEXT NOT NULL,
            at TEXT NOT NULL
        );
        CREATE INDEX approvals_by_run ON approvals (run_id, id);
        """
    )


@migrations()
def m004_review_identity(db: Database) -> None:
    """What each review compared to tell its reviewer from the task's executor (JSON)."""
    db.executescript("ALTER TABLE reviews ADD COLUMN identity TEXT;")


@migrations()
def m005_signed_approvals(db: Database) -> None:
    """Approvals carry what was approved: the mode, the statement, its SSH signature, the signer and the chain head."""
    db.executescript(
        """
        ALTER TABLE approvals ADD COLUMN mode TEXT NOT NULL DEFAULT 'interactive';
        ALTER TABLE approvals ADD COLUMN statement TEXT;
        ALTER TABLE approvals ADD COLUMN signature TEXT;
        ALTER TABLE approvals ADD COLUMN principal TEXT;
        ALTER TABLE approvals ADD COLUMN chain_event INTEGER;
        ALTER TABLE approvals ADD COLUMN chain_hash TEXT;
        ALTER TABLE approvals ADD COLUMN tag TEXT;
        """
    )


@migrations()
def m006_review_reread(db: Database) -> None:
    """A review whose reply is still coming when its deadline passes waits to be re-read: when it
    was last seen alive and doing what (``progress``), when to look again, and notes the reviewer
    left (an unverified model, a prompt sent as files)."""
    db.executescript(
        """
        ALTER TABLE reviews ADD COLUMN progress TEXT;
        ALTER TABLE reviews ADD COLUMN progress_at TEXT;
        ALTER TABLE reviews ADD COLUMN pending_since TEXT;
        ALTER TABLE reviews ADD COLUMN reread_after TEXT;
        ALTER TABLE reviews ADD COLUMN notes TEXT;
        CREATE INDEX reviews_pending ON reviews (status, reread_after);
        """
    )


@migrations()
def m007_job_attempts(db: Database) -> None:
    """Who runs each job attempt and which processes it started; the operator's worker controls.

    The owner columns describe the current (or last) attempt's worker: its host, and its pid with
    the process's start time, so a worker on the same host can tell that the owner is dead (and
    that its pid was not reused). ``owner_host_key`` is host name, boot id and pid namespace: a
    recorded pid means a process only where all three match. Each process an attempt starts is a
    ``job_processes`` row until it is known to have ended; a row still open for an attempt that
    is no longer running is a group to end before the job runs again. ``worker_control`` holds at
    most one row (absent: workers run). All three are bookkeeping, like the jobs table itself.
    """
    db.executescript(
        """
        ALTER TABLE jobs ADD COLUMN owner_host TEXT;
        ALTER TABLE jobs ADD COLUMN owner_host_key TEXT;
        ALTER TABLE jobs ADD COLUMN owner_pid INTEGER;
        ALTER TABLE jobs ADD COLUMN owner_pid_start INTEGER;
        ALTER TABLE jobs ADD COLUMN attempt_started_at TEXT;

        CREATE TABLE job_processes (
            id INTEGER PRIMARY KEY,
            job_id INTEGER NOT NULL REFERENCES jobs (id),
            attempt INTEGER NOT NULL,
            host TEXT NOT NULL,
            host_key TEXT,
            pgid INTEGER NOT NULL,
            pid_start INTEGER,
            command TEXT NOT NULL,
            started_at TEXT NOT NULL,
            ended_at TEXT,
            outcome TEXT
        );
        CREATE INDEX job_processes_by_job ON job_processes (job_id, id);
        CREATE INDEX job_processes_open ON job_processes (host_key) WHERE ended_at IS NULL;

        CREATE TABLE worker_control (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            mode TEXT NOT NULL CHECK (mode IN ('running', 'paused', 'draining')),
            reason TEXT,
            set_by TEXT NOT NULL,
            set_at TEXT NOT NULL
        );
        """
    )


@migrations()
def m008_test_reports(db: Database) -> None:
    """Test-change declarations on tasks, and test reports cached by git tree id."""
    db.executescript(
        """
        ALTER TABLE tasks ADD COLUMN declarations TEXT;

        CREATE TABLE test_reports (
            id INTEGER PRIMARY KEY,
            repo TEXT NOT NULL,
            tree TEXT NOT NULL,
            command_sha256 TEXT NOT NULL,
            commit_sha TEXT NOT NULL,
            run_id TEXT NOT NULL,
            task_id TEXT,
            job_id INTEGER,
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            tests INTEGER NOT NULL,
            passed INTEGER NOT NULL,
            failed INTEGER NOT NULL,
            skipped INTEGER NOT NULL,
            exit_code INTEGER NOT NULL,
            duration_ms INTEGER NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX test_reports_by_tree ON test_reports (repo, tree, command_sha256, id);
        """
    )


@migrations()
def m009_vouched_rows(db: Database) -> None:
    """The index of row vouches; rows that existed before are vouched for by one upgrade event."""
    db.executescript(
        """
        CREATE TABLE row_vouches (
            tbl TEXT NOT NULL,
            key TEXT NOT NULL,
            event_id INTEGER NOT NULL,
            digest TEXT,
            content TEXT,
            PRIMARY KEY (tbl, key)
        ) WITHOUT ROWID;
        """
    )
    moment = dt.datetime.now(dt.UTC)
    vouch_all_rows(
        db.conn,
        kind="ledger.rows_vouched_at_upgrade",
        at=moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
        note="these rows were written before planegate vouched for rows with events; they are trusted as they "
        "stood at this upgrade, not as they were first written",
    )


@migrations()
def m010_mcp_tasks(db: Database) -> None:
    """MCP tasks (the tasks extension): an unguessable task id for a job or a review a tool started."""
    db.executescript(
        """
        CREATE TABLE mcp_tasks (
            id TEXT PRIMARY KEY,
            tool TEXT NOT NULL,
            run_id TEXT NOT NULL,
            job_id INTEGER,
            review_id TEXT,
            seed TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX mcp_tasks_by_job ON mcp_tasks (job_id);
        """
    )


@migrations()
def m011_lifecycle(db: Database) -> None:
    """Runs that change course and clean up after themselves.

    ``graph_versions`` rows of an amendment carry its reason and what it did (JSON: added,
    cancelled, changed). ``policy_adoptions`` records each policy a human adopted for a run after
    it started: the policy before and after (their sha256), who adopted it, and in signed mode
    the signed statement. ``disk_usage`` caches what each run's worktrees take on disk, so a
    status call never walks them (bookkeeping, like jobs: nothing trusts it).
    """
    db.executescript(
        """
        ALTER TABLE graph_versions ADD COLUMN reason TEXT;
        ALTER TABLE graph_versions ADD COLUMN amendment TEXT;

        CREATE TABLE policy_adoptions (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs (id),
            by TEXT NOT NULL,
            via TEXT NOT NULL,
            mode TEXT NOT NULL,
            source TEXT NOT NULL,
            previous_sha256 TEXT NOT NULL,
            policy_sha256 TEXT NOT NULL,
            previous_policy TEXT NOT NULL,
            changes TEXT NOT NULL,
            statement TEXT,
            signature TEXT,
            principal TEXT,
            at TEXT NOT NULL
        );
        CREATE INDEX policy_adoptions_by_run ON policy_adoptions (run_id, id);

        CREATE TABLE disk_usage (
            run_id TEXT PRIMARY KEY,
            bytes INTEGER NOT NULL,
            worktrees INTEGER NOT NULL,
            measured_at TEXT NOT NULL
        );
        """
    )


@migrations()
def m012_operations(db: Database) -> None:
    """What an operator needs beside the chain: incidents, job dispositions and notifications.

    ``incidents``: unexpected exceptions (a bug, not an outcome), each with the id its caller was
    given and the traceback. ``jobs.disposition``: why a job that did not succeed ended, for the
    caller to branch on. ``notifications``: one row per thing a human was told (its key makes it
    once), with how it went; ``notify_cursor``: the last event the notifier looked at, starting at
    the chain head as it stood at this upgrade so that history is not announced. All four are
    bookkeeping, like ``jobs``: nothing a gate trusts, and none is vouched for by events.
    """
    db.executescript(
        """
        CREATE TABLE incidents (
            id TEXT PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            place TEXT NOT NULL,
            error TEXT NOT NULL,
            traceback TEXT NOT NULL,
            context TEXT
        );
        CREATE INDEX incidents_by_time ON incidents (at);

        ALTER TABLE jobs ADD COLUMN disposition TEXT;

        CREATE TABLE notifications (
            key TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            run_id TEXT,
            task_id TEXT,
            event_id INTEGER,
            payload TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'skipped')),
            channel TEXT,
            error TEXT,
            created_at TEXT NOT NULL,
            sent_at TEXT
        );
        CREATE INDEX notifications_pending ON notifications (status, created_at);

        CREATE TABLE notify_cursor (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            event_id INTEGER NOT NULL
        );
        INSERT INTO notify_cursor (id, event_id) SELECT 1, COALESCE(MAX(id), 0) FROM events;
        """
    )


@migrations()
def m013_git_facts(db: Database) -> None:
    """Git facts of task heads (diffstat, merge check, secret scan, symlinks, harness changes),
    computed once per head by a worker so ``get_status`` never runs git. Derived and not vouched:
    shown only; acceptance computes its facts from git itself."""
    db.executescript(
        """
        CREATE TABLE git_facts (
            repo TEXT NOT NULL,
            base TEXT NOT NULL,
            head TEXT NOT NULL,
            integration TEXT NOT NULL,
            harness TEXT NOT NULL,
            facts TEXT NOT NULL,
            computed_at TEXT NOT NULL,
            PRIMARY KEY (repo, base, head, integration, harness)
        ) WITHOUT ROWID;
        CREATE INDEX git_facts_by_age ON git_facts (computed_at);
        """
    )


@migrations()
def m014_large_rows_out_of_key_trees(db: Database) -> None:
    """``row_vouches`` and ``git_facts`` become rowid tables whose natural keys are unique indexes.

    Both were WITHOUT ROWID tables, whose b-tree keeps each whole row in its key cell. A search that
    meets a cell whose row spills to overflow pages reads that whole row to compare keys: on the
    bench ledger a lookup beside the 1.3 MB vouched copy of a task graph read it every time (1 ms
    warm, 2.6 ms on a new connection). A key index holds only the key, and reading ``event_id``
    or ``facts`` from the table stops where the column ends. Contents are copied unchanged: both
    tables are indexes nothing trusts (``vouch``) or derived facts, and neither is vouched."""
    db.executescript(
        """
        CREATE TABLE row_vouches_by_rowid (
            tbl TEXT NOT NULL,
            key TEXT NOT NULL,
            event_id INTEGER NOT NULL,
            digest TEXT,
            content TEXT,
            PRIMARY KEY (tbl, key)
        );
        INSERT INTO row_vouches_by_rowid (tbl, key, event_id, digest, content)
            SELECT tbl, key, event_id, digest, content FROM row_vouches;
        DROP TABLE row_vouches;
        ALTER TABLE row_vouches_by_rowid RENAME TO row_vouches;

        CREATE TABLE git_facts_by_rowid (
            repo TEXT NOT NULL,
            base TEXT NOT NULL,
            head TEXT NOT NULL,
            integration TEXT NOT NULL,
            harness TEXT NOT NULL,
            facts TEXT NOT NULL,
            computed_at TEXT NOT NULL,
            PRIMARY KEY (repo, base, head, integration, harness)
        );
        INSERT INTO git_facts_by_rowid (repo, base, head, integration, harness, facts, computed_at)
            SELECT repo, base, head, integration, harness, facts, computed_at FROM git_facts;
        DROP TABLE git_facts;
        ALTER TABLE git_facts_by_rowid RENAME TO git_facts;
        CREATE INDEX git_facts_by_age ON git_facts (computed_at);
        """
    )


@migrations()
def m015_task_counts(db: Database) -> None:
    """How many tasks each run has in each status, kept by triggers on ``tasks``, so a status answer
    reads a few rows instead of counting every task (on 5,000 tasks, 70 index pages on each new
    connection). Triggers are part of the schema: every write to ``tasks`` keeps the counts, with
    or without planegate. Derived and not vouched; shown and used for suggestions only (dispatching
    counts the tasks themselves)."""
    db.executescript(
        """
        CREATE TABLE task_counts (
            run_id TEXT NOT NULL,
            status TEXT NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (run_id, status)
        ) WITHOUT ROWID;
        INSERT INTO task_counts (run_id, status, n) SELECT run_id, status, COUNT(*) FROM tasks GROUP BY run_id, status;

        CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN
            INSERT INTO task_counts (run_id, status, n) VALUES (NEW.run_id, NEW.status, 1)
                ON CONFLICT (run_id, status) DO UPDATE SET n = n + 1;
        END;
        CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN
            UPDATE task_counts SET n = n - 1 WHERE run_id = OLD.run_id AND status = OLD.status;
        END;
        CREATE TRIGGER task_counts_update AFTER UPDATE OF run_id, status ON tasks
            WHEN OLD.run_id IS NOT NEW.run_id OR OLD.status IS NOT NEW.status BEGIN
            UPDATE task_counts SET n = n - 1 WHERE run_id = OLD.run_id AND status = OLD.status;
            INSERT INTO task_counts (run_id, status, n) VALUES (NEW.run_id, NEW.status, 1)
                ON CONFLICT (run_id, status) DO UPDATE SET n = n + 1;
        END;
        """
    )


def migrate(db: Database, *, stop_before: str | None = None) -> None:
    """Apply pending migrations (the caller holds the write lock)."""
    migrations.apply(db, stop_before=stop_before)
