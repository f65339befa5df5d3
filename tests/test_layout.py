"""The package layout: each package imports only those below it, no module
takes part in an import cycle, every module imports on its own, and imports
sit at the top of modules (only optional heavy extras are imported late)."""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Bottom to top: a module may import from its own layer and those below.
LAYERS = (
    ('jaxfit.errors', 'jaxfit.version'),
    ('jaxfit.body',),
    ('jaxfit.runtime',),
    ('jaxfit.fit',),
    ('jaxfit.data',),
    ('jaxfit.io',),
    ('jaxfit.demo',),
    ('jaxfit.report',),
    ('jaxfit.run',),
    ('jaxfit.main',),
    ('jaxfit',),   # the public API (jaxfit/__init__.py)
)
# Optional extras, imported where used (a run without them never loads them).
LATE_IMPORTS = ('ray', 'matplotlib', 'PIL', 'trimesh', 'pygltflib', 'nimblephysics',
                'nimblephysics_libs')


def _modules(package):
  """{module name: path} of every .py file below ROOT/package."""
  found = {}
  for directory, _, files in os.walk(os.path.join(ROOT, package)):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(directory, name)
        parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
        found['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
  return found


def _imports(path, known):
  """[(imported module, line, at top level)] of the modules in `known`."""
  tree = ast.parse(open(path, encoding='utf-8').read(), path)
  top = set(id(n) for n in tree.body)
  for node in tree.body:   # module-level try/if blocks count as top level
    if isinstance(node, (ast.Try, ast.If)):
      top |= {id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
    else:
      continue
    for name in names:
      while name and name not in known and '.' in name:
        name = name.rsplit('.', 1)[0]
      out.append((name, node.lineno, id(node) in top))
  return out


def _layer(module):
  for i, layer in enumerate(LAYERS):
    if any(module == p or module.startswith(p + '.') for p in layer if p != 'jaxfit'):
      return i
  return len(LAYERS) - 1


def _graph():
  modules = {**_modules('jaxfit'), **_modules('benchmarks')}
  return modules, {m: sorted({n for n, _, _ in _imports(p, modules) if n in modules and n != m})
                   for m, p in modules.items()}


def test_no_import_cycle():
  _, graph = _graph()
  index, low, stack, on_stack, cycles = {}, {}, [], set(), []

  def visit(v):   # Tarjan's strongly connected components
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        cycles.append(sorted(component))

  sys.setrecursionlimit(10000)
  for v in graph:
    if v not in index:
      visit(v)
  assert not cycles, cycles


def test_each_package_imports_only_those_below_it():
  modules, graph = _graph()
  wrong = [f'{m} (layer {_layer(m)}) imports {n} (layer {_layer(n)})'
           for m, deps in graph.items() if m.startswith('jaxfit') for n in deps
           if n.startswith('jaxfit') and m != 'jaxfit' and _layer(n) > _layer(m)]
  assert not wrong, wrong
  assert set(modules) >= {'jaxfit.io.outputs', 'jaxfit.runtime.store', 'jaxfit.fit.pipeline'}


def test_imports_are_at_the_top_except_optional_extras():
  modules = _modules('jaxfit')
  hidden = [f'{os.path.relpath(p, ROOT)}:{line} imports {name}'
            for m, p in modules.items() for name, line, top in _imports(p, modules)
            if not top and name.split('.')[0] not in LATE_IMPORTS]
  assert not hidden, hidden


def test_every_module_imports_on_its_own():
  """Each module in a fresh interpreter (forked before any jaxfit module is
  imported; the third-party libraries are loaded once first), and only from
  this tree."""
  names = sorted(_modules('jaxfit'))
  script = f'''
import os, sys
sys.path.insert(0, {ROOT!r})
import absl.logging, jax, jax.numpy, ml_collections, numpy, optax, tqdm
assert not [m for m in sys.modules if m.startswith('jaxfit')]
failed = []
for name in {names!r}:
  pid = os.fork()
  if pid == 0:
    try:
      import importlib
      importlib.import_module(name)
      stray = [m for m, mod in sys.modules.items() if m.startswith('jaxfit')
               and getattr(mod, '__file__', None) and not mod.__file__.startswith({ROOT!r})]
      os._exit(3 if stray else 0)
    except BaseException as e:
      print(name, type(e).__name__, e, file=sys.stderr)
      os._exit(1)
  _, status = os.waitpid(pid, 0)
  if status:
    failed.append(name)
print(failed)
'''
  proc = subprocess.run([sys.executable, '-c', script], cwd='/', capture_output=True, text=True,
                        timeout=900, env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == '[]', proc.stdout + proc.stderr[-3000:]
