"""``register_graph`` with 5,000 tasks / 10,000 edges (DESIGN §8: ≤ 1 s).

Each repetition opens a fresh run (start_run, 50 frozen requirements, 50 modules owning
``src/m<i>/**``) and times the domain call ``register_graph(env, run, tasks)`` on a random DAG
with a fixed seed; the pure ``validate_graph`` is timed on its own too.
"""

from __future__ import annotations

import time
from typing import Any

from _common import emit, log, make_repo, parser, scratch, summary_ms
from _workload import SEED, dag_tasks, frozen_run, open_env, sizes_for

from planegate.tools.control.graph import register_graph, validate_graph
from planegate.tools.control.runs import current_architecture, current_requirements

TARGET_S = 1.0


def main() -> None:
    args = parser(__doc__ or "", quick_help="500 tasks / 1,000 edges, 2 repetitions").parse_args()
    sizes = sizes_for(args.quick)
    repetitions = 2 if args.quick else 5
    with scratch("graph") as root:
        repo = make_repo(root / "repo")
        began = time.perf_counter()
        tasks = dag_tasks(sizes)
        build_specs_s = time.perf_counter() - began
        env = open_env()
        try:
            register_s: list[float] = []
            validate_s: list[float] = []
            result: Any = None
            for attempt in range(repetitions):
                run = frozen_run(env, repo, sizes)
                architecture = current_architecture(env, run)
                assert architecture is not None
                requirement_ids = set(current_requirements(env, run))
                began = time.perf_counter()
                result = register_graph(env, run, tasks)
                register_s.append(time.perf_counter() - began)
                began = time.perf_counter()
                graph = validate_graph(tasks, requirement_ids, architecture["modules"])
                validate_s.append(time.perf_counter() - began)
                log(f"  {attempt + 1}: register_graph {register_s[-1]:.3f} s, validate_graph {validate_s[-1]:.3f} s")
                assert result.tasks == sizes.tasks and len(result.waves) == len(graph.waves)
        finally:
            env.close()
    register = summary_ms(register_s)
    median_s = float(register["p50_ms"]) / 1000
    emit(
        {
            "benchmark": "register_graph",
            "tasks": sizes.tasks,
            "edges": sizes.edges,
            "requirements": sizes.requirements,
            "modules": sizes.modules,
            "seed": SEED,
            "quick": args.quick,
            "repetitions": repetitions,
            "register_graph": register,
            "validate_graph": summary_ms(validate_s),
            "register_graph_s_each": [round(s, 4) for s in register_s],
            "task_specs_build_s": round(build_specs_s, 3),
            "waves": len(result.waves),
            "largest_wave": max(len(w) for w in result.waves),
            "target": f"register_graph median ≤ {TARGET_S} s",
            "median_s": round(median_s, 4),
            "meets_target": median_s <= TARGET_S,
        }
    )


if __name__ == "__main__":
    main()
