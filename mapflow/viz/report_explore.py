"""The report's explorable figures: where each recorded number lies in the saved PNG, and the page's script.

`figure_map(fig)` is called right after the PNG is written (the layout of that draw is the one the PNG shows): for
every axes with a record (`mapflow.viz.figure_data`) it returns the axes' box and each point's, bar's or the cell
grid's corners as fractions of the image (0, 0 top left). The page embeds it as JSON next to the <img>; `SCRIPT` maps
the mouse to the nearest point, the bar or the cell and shows its numbers (task, flow, layer, value, n, band), adds
selectors for the fields that vary (task, flow, model, ...) that highlight the matching panels/lines and filter the
figure's number table.
"""

from __future__ import annotations

import html
import json

import numpy as np
from matplotlib.figure import Figure

from .figure_data import recorded


def _fractions(fig: Figure, ax, points) -> list[list[float] | None]:
    """Data points of ``ax`` as [x, y] fractions of the image, top-left origin; None where not finite."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    finite = np.isfinite(points).all(1)
    safe = np.where(finite[:, None], points, 0.0)
    frac = fig.transFigure.inverted().transform(ax.transData.transform(safe))
    return [[round(float(x), 6), round(float(1 - y), 6)] if ok else None for (x, y), ok in zip(frac, finite)]


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's header (its IHDR chunk)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG image")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def figure_map(fig: Figure, png: bytes) -> dict:
    """The recorded numbers of ``fig`` with their places in ``png``, its saved image (call right after saving it)."""
    width, height = png_size(png)
    panels = []
    for ax in fig.axes:
        record = recorded(ax)
        if not record or not record["items"]:
            continue
        box = ax.get_position()
        items = []
        for item in record["items"]:
            item = dict(item)
            if item["kind"] in ("series", "bars"):
                xs = item.pop("x_data", None) or list(range(len(item["x"])))  # bars: categorical positions
                item["px"] = _fractions(
                    fig,
                    ax,
                    [[x if x is not None else np.nan, y if y is not None else np.nan] for x, y in zip(xs, item["y"])],
                )
            else:
                left, right, bottom, top = item["extent"]
                first_row_y, last_row_y = (top, bottom) if item["origin"] == "upper" else (bottom, top)
                item["corners"] = _fractions(fig, ax, [[left, first_row_y], [right, last_row_y]])
            items.append(item)
        panels.append(
            {
                "box": [round(v, 6) for v in (box.x0, 1 - box.y1, box.x1, 1 - box.y0)],
                "title": ax.get_title(),
                "fields": record["fields"],
                "value_name": record["value_name"],
                "items": items,
            }
        )
    return {"width": round(width), "height": round(height), "panels": panels}


def figure_html(png_base64: str, alt: str, caption_html: str, mapping: dict | None) -> str:
    """One <figure>: the image, its numbers as JSON (when recorded) and the caption."""
    data = ""
    if mapping and mapping["panels"]:
        text = json.dumps(mapping, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
        data = f"<script type='application/json' class='mf-data'>{text}</script>"
    return (
        f"<figure class='mf-figure'><div class='mf-stage'><img src='data:image/png;base64,{png_base64}' "
        f"alt='{html.escape(alt)}'></div>{data}<figcaption>{caption_html}</figcaption></figure>"
    )


STYLE = """.mf-stage{position:relative;display:inline-block;max-width:100%;line-height:0}
.mf-stage img{display:block;max-width:100%;height:auto}
.mf-stage svg{position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none}
#mf-tip{position:fixed;z-index:10;display:none;background:#fff;border:1px solid #888;box-shadow:0 2px 6px #0003;
padding:4px 6px;font-size:12px;pointer-events:none;max-width:360px}
#mf-tip table{margin:0;font-size:12px}#mf-tip th{text-align:left;color:#666;font-weight:normal;padding:0 6px 0 0;
border:0}#mf-tip td{text-align:left;padding:0;border:0}
.mf-controls{font-size:.85em;margin:.3em 0}.mf-controls label{margin-right:1em}
details.mf-numbers summary{cursor:pointer;color:#357;font-size:.9em}
.table-box{max-width:100%;overflow-x:auto;max-height:28em;overflow-y:auto}
.table-box table{font-size:.8em}.table-box th{position:sticky;top:0;background:#fff}"""

# Plain JavaScript, no library: hover/click shows a point's numbers; selectors highlight and filter.
SCRIPT = r"""
(function(){
const tip=document.createElement('div');tip.id='mf-tip';document.body.appendChild(tip);
const SVG='http://www.w3.org/2000/svg';
function fmt(v){if(v===null||v===undefined)return '–';const a=Math.abs(v);
  return (a!==0&&(a<1e-3||a>=1e5))?v.toExponential(4):String(Number(v.toPrecision(6)));}
function itemFields(panel,item){return Object.assign({},panel.fields,item.series||{});}
// every number of a figure as flat rows: fields, x, value, n, band
function rowsOf(map){const rows=[];map.panels.forEach((p,pi)=>p.items.forEach((it,ii)=>{
  if(it.kind==='cells'){const nc=it.cols.length;it.values.forEach((v,k)=>{const r=Math.floor(k/nc),c=k%nc;
    const f=itemFields(p,it);f[it.row_name]=it.rows[r];f[it.col_name]=it.cols[c];
    rows.push({pi,ii,k,fields:f,value:v,value_name:p.value_name,n:it.n[k],
      low:it.low?it.low[k]:null,high:it.high?it.high[k]:null,band:it.band});});}
  else{it.x.forEach((x,k)=>{const f=itemFields(p,it);f[it.x_name]=x;
    rows.push({pi,ii,k,fields:f,value:it.y[k],value_name:p.value_name,n:it.n[k],
      low:it.low?it.low[k]:null,high:it.high?it.high[k]:null,band:it.band||''});});}}));return rows;}
function inBox(b,fx,fy){return fx>=b[0]&&fx<=b[2]&&fy>=b[1]&&fy<=b[3];}
// the number under the mouse (fractions of the image): a cell, the nearest bar/point of the panel
function locate(map,fx,fy){const W=map.width,H=map.height;
  for(let pi=0;pi<map.panels.length;pi++){const p=map.panels[pi];if(!inBox(p.box,fx,fy))continue;
    let best=null;
    p.items.forEach((it,ii)=>{
      if(it.kind==='cells'){const [c0,c1]=it.corners;const nr=it.rows.length,nc=it.cols.length;
        const c=Math.floor((fx-c0[0])/(c1[0]-c0[0])*nc),r=Math.floor((fy-c0[1])/(c1[1]-c0[1])*nr);
        if(r>=0&&r<nr&&c>=0&&c<nc)best={pi,ii,k:r*nc+c,d:0};}
      else it.px.forEach((q,k)=>{if(!q)return;
        const dx=(q[0]-fx)*W,dy=it.kind==='bars'?0:(q[1]-fy)*H,d=Math.hypot(dx,dy);
        if(!best||d<best.d)best={pi,ii,k,d};});});
    if(best)return best;}
  return null;}
function rowFor(rows,hit){return rows.find(r=>r.pi===hit.pi&&r.ii===hit.ii&&r.k===hit.k);}
function showTip(row,x,y){let h='<table>';
  Object.entries(row.fields).forEach(([k,v])=>{h+=`<tr data-key="${esc(k)}"><th>${esc(k)}</th><td>${esc(v)}</td></tr>`;});
  h+=`<tr data-key="value" data-value="${row.value===null?'':row.value}"><th>${esc(row.value_name)}</th><td>${fmt(row.value)}</td></tr>`;
  h+=`<tr data-key="n"><th>n</th><td>${row.n>=0?row.n:'–'}</td></tr>`;
  if(row.low!==null&&row.high!==null)h+=`<tr data-key="band"><th>band</th><td>[${fmt(row.low)}, ${fmt(row.high)}] ${esc(row.band)}</td></tr>`;
  tip.innerHTML=h+'</table>';tip.style.display='block';
  const r=tip.getBoundingClientRect();let left=x+14,top=y+14;
  if(left+r.width>innerWidth)left=x-r.width-14;if(top+r.height>innerHeight)top=y-r.height-14;
  tip.style.left=Math.max(0,left)+'px';tip.style.top=Math.max(0,top)+'px';}
function esc(s){return String(s).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));}
function mark(svg,map,hit,cls){const p=map.panels[hit.pi],it=p.items[hit.ii],W=map.width,H=map.height;
  let el;if(it.kind==='cells'){const [c0,c1]=it.corners,nr=it.rows.length,nc=it.cols.length;
    const r=Math.floor(hit.k/nc),c=hit.k%nc,w=(c1[0]-c0[0])/nc,h=(c1[1]-c0[1])/nr;
    const x=c0[0]+c*w,y=c0[1]+r*h;el=document.createElementNS(SVG,'rect');
    el.setAttribute('x',Math.min(x,x+w)*W);el.setAttribute('y',Math.min(y,y+h)*H);
    el.setAttribute('width',Math.abs(w)*W);el.setAttribute('height',Math.abs(h)*H);}
  else{const q=it.px[hit.k];el=document.createElementNS(SVG,'circle');el.setAttribute('cx',q[0]*W);
    el.setAttribute('cy',q[1]*H);el.setAttribute('r',6);}
  el.setAttribute('fill','none');el.setAttribute('stroke','black');el.setAttribute('stroke-width',cls==='hover'?2:1.5);
  el.setAttribute('class','mf-'+cls);svg.appendChild(el);}
function setup(fig){const script=fig.querySelector('script.mf-data');if(!script)return;
  const map=JSON.parse(script.textContent),rows=rowsOf(map);
  const stage=fig.querySelector('.mf-stage'),img=stage.querySelector('img');
  const svg=document.createElementNS(SVG,'svg');svg.setAttribute('viewBox',`0 0 ${map.width} ${map.height}`);
  svg.setAttribute('preserveAspectRatio','none');stage.appendChild(svg);
  const keys=[];rows.forEach(r=>Object.keys(r.fields).forEach(k=>{if(!keys.includes(k))keys.push(k);}));
  const xKeys=new Set();map.panels.forEach(p=>p.items.forEach(it=>{if(it.x_name)xKeys.add(it.x_name);
    if(it.row_name){xKeys.add(it.row_name);xKeys.add(it.col_name);}}));
  const choice={};const controls=document.createElement('div');controls.className='mf-controls';
  keys.filter(k=>!xKeys.has(k)).forEach(k=>{const values=[...new Set(rows.map(r=>r.fields[k]).filter(v=>v!==undefined))];
    if(values.length<2)return;const label=document.createElement('label');label.textContent=k+' ';
    const sel=document.createElement('select');sel.dataset.key=k;
    sel.innerHTML='<option value="">all</option>'+values.map(v=>`<option>${esc(v)}</option>`).join('');
    sel.onchange=()=>{choice[k]=sel.value;refresh();};label.appendChild(sel);controls.appendChild(label);});
  const details=document.createElement('details');details.className='mf-numbers';
  const summary=document.createElement('summary');details.appendChild(summary);
  const box=document.createElement('div');box.className='table-box';details.appendChild(box);
  fig.insertBefore(details,fig.querySelector('figcaption').nextSibling);
  if(controls.children.length)fig.insertBefore(controls,details);
  const matches=r=>Object.entries(choice).every(([k,v])=>!v||r.fields[k]===undefined||r.fields[k]===v);
  function refresh(){svg.querySelectorAll('.mf-dim,.mf-pick').forEach(e=>e.remove());
    const kept=rows.filter(matches),active=Object.values(choice).some(v=>v);
    if(active){map.panels.forEach((p,pi)=>{if(kept.some(r=>r.pi===pi))return;const b=p.box;
        const el=document.createElementNS(SVG,'rect');el.setAttribute('class','mf-dim');el.setAttribute('x',b[0]*map.width);
        el.setAttribute('y',b[1]*map.height);el.setAttribute('width',(b[2]-b[0])*map.width);
        el.setAttribute('height',(b[3]-b[1])*map.height);el.setAttribute('fill','white');el.setAttribute('fill-opacity',0.7);
        svg.appendChild(el);});
      if(kept.length<=400)kept.forEach(r=>{const it=map.panels[r.pi].items[r.ii];
        if(it.kind!=='cells'&&it.px[r.k]||it.kind==='cells')mark(svg,map,r,'pick');});}
    const cols=keys.concat(['value','n','band']);
    let h='<table><thead><tr>'+cols.map(c=>`<th>${esc(c==='value'?(map.panels[0].value_name):c)}</th>`).join('')+'</tr></thead><tbody>';
    kept.forEach(r=>{h+='<tr>'+keys.map(k=>`<td>${esc(r.fields[k]===undefined?'':r.fields[k])}</td>`).join('')+
      `<td>${fmt(r.value)}</td><td>${r.n>=0?r.n:'–'}</td><td>${r.low!==null&&r.high!==null?'['+fmt(r.low)+', '+fmt(r.high)+']':''}</td></tr>`;});
    box.innerHTML=h+'</tbody></table>';summary.textContent=`numbers of this figure (${kept.length} of ${rows.length} rows)`;}
  refresh();
  function at(ev){const rect=img.getBoundingClientRect();
    return locate(map,(ev.clientX-rect.left)/rect.width,(ev.clientY-rect.top)/rect.height);}
  img.addEventListener('mousemove',ev=>{svg.querySelectorAll('.mf-hover').forEach(e=>e.remove());
    const hit=at(ev);if(!hit){tip.style.display='none';return;}
    const row=rowFor(rows,hit);if(!row||row.value===null){tip.style.display='none';return;}
    mark(svg,map,hit,'hover');showTip(row,ev.clientX,ev.clientY);});
  img.addEventListener('mouseleave',()=>{svg.querySelectorAll('.mf-hover').forEach(e=>e.remove());tip.style.display='none';});
  img.addEventListener('click',ev=>{const hit=at(ev);if(!hit)return;const row=rowFor(rows,hit);
    Object.keys(choice).forEach(k=>delete choice[k]);
    controls.querySelectorAll('select').forEach(s=>{const v=row.fields[s.dataset.key];
      if(v!==undefined){s.value=v;choice[s.dataset.key]=v;}else s.value='';});
    refresh();details.open=true;});}
document.querySelectorAll('figure.mf-figure').forEach(setup);
})();
"""
