"""The report's pages: one self-contained report.html per subject and the
run's sortable index.html."""

import base64
import html
import json
import os
from typing import List

from jaxfit.runtime.files import atomic_write


def _embed(path):
  mime = {'.png': 'image/png', '.gif': 'image/gif'}[os.path.splitext(path)[1]]
  with open(path, 'rb') as f:
    return f'data:{mime};base64,' + base64.b64encode(f.read()).decode()


def _fmt(v, digits=2):
  if v is None:
    return '-'
  if isinstance(v, float):
    return f'{v:.{digits}f}'
  return html.escape(str(v))


_STYLE = """<style>body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3;cursor:pointer}td:first-child,th:first-child,td.l{text-align:left}
img{max-width:100%;display:block;margin:.5em 0}.bad{color:#b00}pre{background:#f7f7f7;padding:.6em;font-size:12px;overflow:auto}
</style>"""


def _trial_section(trial, images, meshes, subject_dir):
  m = trial['metrics']
  name = m.get('trial') or os.path.basename(trial['dir'])
  rows = [('frames', m.get('frames')), ('fps', m.get('fps')),
          ('MPJPE mm (raw SMPL joints, comparable joints)', m.get('mpjpe_mm')),
          ('PA-MPJPE mm', m.get('pa_mpjpe_mm')),
          ('fit residual mm (joints + offsets, all mapped)', m.get('fit_residual_mm')),
          ('PCK@50 / 100 / 150 mm', ' / '.join(_fmt(m.get(f'pck_{k}mm'), 3) for k in (50, 100, 150))),
          ('max |beta|', m.get('max_abs_beta')),
          ('worst segment twist p95 deg', f'{_fmt(m.get("worst_twist_p95_deg"))} '
                                           f'({m.get("worst_twist_segment") or "-"})'),
          ('jitter fit / input mm/frame^3', f'{_fmt(m.get("jitter_fit_mm_per_frame3"))} / '
                                            f'{_fmt(m.get("jitter_target_mm_per_frame3"))}'),
          ('contact source', m.get('contact_source')), ('joint centres', m.get('joint_centre_source')),
          ('body model', (m.get('body_model') or {}).get('name'))]
  times = m.get('time_s', {})
  parts = [f'<h2 id="{html.escape(name)}">{html.escape(name)}</h2>']
  if m.get('warning'):
    parts.append(f'<p class="bad">{html.escape(m["warning"])}</p>')
  if m.get('note'):
    parts.append(f'<p>{html.escape(m["note"])}</p>')
  parts.append('<table>' + ''.join(f'<tr><td class="l">{html.escape(k)}</td><td>{_fmt(v)}</td></tr>'
                                   for k, v in rows) + '</table>')
  parts.append('<p>Time (s): ' + ', '.join(f'{html.escape(k)} {_fmt(v)}' for k, v in times.items())
               + '</p>')
  if m.get('offsets_mm'):
    parts.append('<p>Learned correspondence offsets (mm, in the SMPL joint\'s frame): '
                 + ', '.join(f'{html.escape(k)} {v}' for k, v in m['offsets_mm'].items()) + '</p>')
  for warning in m.get('offset_warnings', ()):
    parts.append(f'<p class="bad">{html.escape(warning)}</p>')
  for key in ('per_joint_mpjpe', 'error_over_time', 'trajectories', 'segment_orientation',
              'skeleton', 'body', 'contact_sheet'):
    if key in images:
      parts.append(f'<img alt="{key}" src="{_embed(images[key])}">')
  if meshes:
    links = ', '.join(f'<a href="{html.escape(os.path.relpath(p, subject_dir))}">'
                      f'{html.escape(os.path.basename(p))}</a>' for p in meshes)
    parts.append(f'<p>Meshes: {links}</p>')
  parts.append(f'<details><summary>config</summary><pre>'
               f'{html.escape(json.dumps(trial["config"], indent=1, sort_keys=True))}</pre></details>')
  return '\n'.join(parts)


def write_subject_report(subject_dir, reports: List[dict]):
  """<subject>/report.html: every reported trial of the subject, self-contained."""
  subject = os.path.basename(os.path.normpath(subject_dir))
  body = [f'<h1>{html.escape(subject)}</h1>',
          '<p>' + ' | '.join(f'<a href="#{html.escape(r["trial"]["metrics"].get("trial", ""))}">'
                             f'{html.escape(r["trial"]["metrics"].get("trial", ""))}</a>'
                             for r in reports) + '</p>']
  for r in reports:
    body.append(_trial_section(r['trial'], r['images'], r['meshes'], subject_dir))
    body += [f'<p class="bad">{html.escape(n)}</p>' for n in r['notes']]
  return _write_page(os.path.join(subject_dir, 'report.html'), f'jaxfit: {subject}', body)


def _write_page(path, title, body, script=''):
  """A self-contained HTML page (atomically)."""
  with atomic_write(path) as tmp:
    with open(tmp, 'w', encoding='utf-8') as f:
      f.write(f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}'
              f'</title>{_STYLE}</head><body>{"".join(body)}{script}</body></html>')
  return path


_SORT_SCRIPT = """<script>
document.querySelectorAll('th').forEach(th => th.addEventListener('click', () => {
  const col = th.cellIndex, body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
  const dir = th.dataset.dir = th.dataset.dir === 'desc' ? 'asc' : 'desc';
  const key = r => { const t = r.cells[col].dataset.v ?? r.cells[col].textContent;
                     const n = parseFloat(t); return isNaN(n) ? t : n; };
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (dir === 'asc' ? 1 : -1));
  rows.forEach(r => body.appendChild(r));
}));
</script>"""


def write_index(output_dir, rows: List[dict]):
  """<output_dir>/index.html: the run's trials, worst MPJPE first, sortable;
  failed trials first, with their error. rows: summary rows (jaxfit.run.dataset)."""
  ok = sorted((r for r in rows if r.get('status') == 'ok'),
              key=lambda r: -(r.get('mpjpe_mm') or 0.0))
  failed = [r for r in rows if r.get('status') != 'ok']
  head = ('<tr><th>subject</th><th>trial</th><th>frames</th><th>MPJPE mm</th><th>PA-MPJPE mm</th>'
          '<th>PCK@50</th><th>PCK@100</th><th>fit residual mm</th><th>max |beta|</th>'
          '<th>fit s</th></tr>')
  lines = []
  for r in ok:
    link = f'{r["subject"]}/report.html'
    has = os.path.isfile(os.path.join(output_dir, link))
    trial = html.escape(r['trial'])
    cell = (f'<a href="{html.escape(link)}#{trial}">{trial}</a>' if has else trial)
    lines.append(f'<tr><td>{html.escape(r["subject"])}</td><td class="l">{cell}</td>'
                 + ''.join(f'<td>{_fmt(r.get(k), d)}</td>' for k, d in
                           (('frames', 0), ('mpjpe_mm', 2), ('pa_mpjpe_mm', 2), ('pck_50mm', 3),
                            ('pck_100mm', 3), ('fit_residual_mm', 2), ('max_abs_beta', 2),
                            ('fit_s', 2))) + '</tr>')
  body = ['<h1>jaxfit run</h1>',
          f'<p>{len(ok)} trials fitted, {len(failed)} failed. Click a column to sort.</p>']
  if failed:
    body.append('<h2>Failed</h2><table><thead><tr><th>subject</th><th>trial</th><th>status</th>'
                '<th>error</th></tr></thead><tbody>'
                + ''.join(f'<tr><td>{html.escape(str(r["subject"]))}</td><td class="l">'
                          f'{html.escape(str(r["trial"]))}</td><td>{html.escape(str(r["status"]))}</td>'
                          f'<td class="l bad">{html.escape(str(r.get("error") or ""))}</td></tr>'
                          for r in failed) + '</tbody></table>')
  body.append(f'<h2>Trials (worst MPJPE first)</h2><table><thead>{head}</thead><tbody>'
              + ''.join(lines) + '</tbody></table>')
  return _write_page(os.path.join(output_dir, 'index.html'), 'jaxfit run', body, _SORT_SCRIPT)
