"""The render farm: the face graph's tasks (render/pipeline/graph.py) run as Ray tasks, many sequences at once, with
the render folders written on the driver. `executor.py` is the driver, `tasks.py` what workers run.

Imports: `render.pipeline` and every room below it, `sequences`, torch, numpy, tqdm, and Ray (only when a farm
render runs); the commands import it. Nothing below the commands imports it: a local render never needs Ray.
"""
