// Warren's web dashboard: one page with hash routes (#/queues, #/queues/{vhost}/{name}, …) over
// the management API. No framework: every node is made with el() and every piece of data enters
// the DOM as text (textContent, attribute values), never as HTML.

/* global uPlot */

const POLL_MS = 5000;
const HISTORY = 360; // points kept per plot: 30 minutes at 5 s

// ---------------------------------------------------------------------------------------------
// DOM helpers

/** An element: el('td', {class: 'num'}, 'text', childNode, …). Strings become text nodes. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (selector) => document.querySelector(selector);

function fmtInt(n) {
  return typeof n === 'number' ? n.toLocaleString('en-US') : '–';
}

function fmtRate(n) {
  if (typeof n !== 'number') return '–';
  return `${n.toLocaleString('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 })}/s`;
}

function rateOf(stats, key) {
  return stats?.[`${key}_details`]?.rate ?? 0;
}

/** A short message at the bottom right: green, or red for errors. */
function flash(text, isError = false) {
  const msg = el('div', { class: isError ? 'msg error' : 'msg' }, text);
  $('#flash').append(msg);
  setTimeout(() => msg.remove(), isError ? 8000 : 4000);
}

// ---------------------------------------------------------------------------------------------
// The API

const auth = {
  get header() {
    return sessionStorage.getItem('warren.auth');
  },
  get user() {
    return sessionStorage.getItem('warren.user');
  },
  set(user, password) {
    sessionStorage.setItem('warren.user', user);
    const bytes = new TextEncoder().encode(`${user}:${password}`);
    sessionStorage.setItem('warren.auth', `Basic ${btoa(String.fromCharCode(...bytes))}`);
  },
  clear() {
    sessionStorage.removeItem('warren.user');
    sessionStorage.removeItem('warren.auth');
  },
};

class ApiError extends Error {
  constructor(status, reason) {
    super(reason);
    this.status = status;
  }
}

/** Calls the API; a 401 logs out and shows the login form. */
async function api(method, path, body, extraHeaders = {}) {
  const headers = { Authorization: auth.header ?? '', ...extraHeaders };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  // credentials 'omit': the browser never offers its own Basic-auth prompt on a 401.
  const response = await fetch(path, {
    method,
    headers,
    credentials: 'omit',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    auth.clear();
    showLogin('Your session has ended: log in again.');
    throw new ApiError(401, 'not authorised');
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data?.reason ?? response.statusText);
  return data;
}

const enc = encodeURIComponent;

/** Runs an action from a form or a button, with its outcome as a flash message. */
async function act(action, success) {
  try {
    const result = await action();
    if (success) flash(typeof success === 'function' ? success(result) : success);
    return result;
  } catch (e) {
    if (e.status !== 401) flash(`Failed: ${e.message}`, true);
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Page lifecycle: one page at a time; its timers and plots stop when it is left.

let page = { timers: [], plots: [] };

function leavePage() {
  page.timers.forEach(clearInterval);
  page.plots.forEach((p) => p.destroy());
  page = { timers: [], plots: [] };
}

/** Calls `fn` now and every POLL_MS while the page is shown. */
function poll(fn) {
  const run = () => fn().catch((e) => {
    if (e.status !== 401) console.warn(e);
  });
  run();
  page.timers.push(setInterval(run, POLL_MS));
}

// ---------------------------------------------------------------------------------------------
// Plots

/** A time-series plot in `container` with the named series; returns push(values). */
function timePlot(container, title, series, format) {
  const colours = ['#2f5d8a', '#d9822b', '#2e7d32', '#8e44ad'];
  const data = [[], ...series.map(() => [])];
  const width = () => Math.max(300, container.clientWidth - 8);
  const plot = new uPlot(
    {
      title,
      width: width(),
      height: 220,
      cursor: { drag: { x: false, y: false } },
      legend: { live: false },
      scales: {
        x: { time: true, auto: false }, // set after each point: see below
        y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] },
      },
      axes: [{}, { values: (u, ticks) => ticks.map(format), size: 70 }],
      series: [
        {},
        ...series.map((label, i) => ({
          label,
          stroke: colours[i % colours.length],
          width: 2,
          // ack follows deliver and confirm follows publish closely: dashed, both stay visible.
          dash: series.length > 2 && i >= 2 ? [6, 4] : undefined,
          value: (u, v) => (v === null || v === undefined ? '–' : format(v)),
        })),
      ],
    },
    data,
    container,
  );
  page.plots.push(plot);
  const resize = () => plot.setSize({ width: width(), height: 220 });
  window.addEventListener('resize', resize);
  const destroy = plot.destroy.bind(plot);
  plot.destroy = () => {
    window.removeEventListener('resize', resize);
    destroy();
  };
  return (values) => {
    data[0].push(Date.now() / 1000);
    values.forEach((v, i) => data[i + 1].push(v));
    if (data[0].length > HISTORY) data.forEach((d) => d.shift());
    plot.setData(data);
    // At least the last minute, so that the first points are not stretched over years.
    const last = data[0][data[0].length - 1];
    plot.setScale('x', { min: Math.min(data[0][0], last - 60), max: last });
    container.dataset.points = data[0].length;
  };
}

// ---------------------------------------------------------------------------------------------
// Tables

/**
 * A table. columns: [{title, key?, num?, cell(row) -> node|string}]; a column with a `key`
 * sorts by it when `sort` is given ({key, reverse, onChange}).
 */
function table(columns, rows, sort, emptyText = 'Nothing here.') {
  const head = el('tr', {}, columns.map((column) => {
    const classes = [column.num ? 'num' : '', sort && column.key ? 'sortable' : ''];
    if (sort && column.key && sort.key === column.key) classes.push(sort.reverse ? 'sorted-desc' : 'sorted-asc');
    const th = el('th', { class: classes.join(' ').trim() || undefined, 'data-key': column.key }, column.title);
    if (sort && column.key) {
      th.addEventListener('click', () => {
        const reverse = sort.key === column.key ? !sort.reverse : Boolean(column.num);
        sort.onChange(column.key, reverse);
      });
    }
    return th;
  }));
  const body = el('tbody');
  for (const row of rows) {
    body.append(el('tr', {}, columns.map((c) => el('td', { class: c.num ? 'num' : undefined }, c.cell(row)))));
  }
  const wrap = el('div', { class: 'table-wrap' }, el('table', {}, el('thead', {}, head), body));
  if (rows.length === 0) wrap.append(el('div', { class: 'empty' }, emptyText));
  return wrap;
}

/**
 * A paged, sorted, filtered list of `endpoint` (the API does the work: fast with 100,000 items).
 * Returns the element; it refreshes every POLL_MS.
 */
function listing({ endpoint, columns, noun, defaultSort = 'name', id }) {
  const state = { name: '', sort: defaultSort, reverse: false, page: 1, pageSize: 100 };
  const filter = el('input', { type: 'search', placeholder: `Filter ${noun} by name`, class: 'filter', 'aria-label': 'Filter by name' });
  const pageSize = el('select', { 'aria-label': 'Page size' }, [20, 100, 500].map((n) => el('option', { value: n }, `${n} per page`)));
  pageSize.value = '100';
  const info = el('span', { class: 'muted count' });
  const prev = el('button', { type: 'button', class: 'secondary small' }, '‹ Prev');
  const next = el('button', { type: 'button', class: 'secondary small' }, 'Next ›');
  const holder = el('div', { id });
  const root = el('div', {}, el('div', { class: 'toolbar' }, filter, el('span', { class: 'grow' }), info, el('span', { class: 'pager' }, prev, next, pageSize)), holder);

  let generation = 0;
  async function refresh() {
    const mine = ++generation;
    const query = new URLSearchParams({
      page: state.page,
      page_size: state.pageSize,
      name: state.name,
      sort: state.sort,
      sort_reverse: state.reverse,
    });
    const data = await api('GET', `${endpoint}?${query}`);
    if (mine !== generation) return; // a newer request was made meanwhile
    if (state.page > data.page_count) {
      state.page = data.page_count;
      return refresh();
    }
    const sort = {
      key: state.sort,
      reverse: state.reverse,
      onChange(key, reverse) {
        Object.assign(state, { sort: key, reverse, page: 1 });
        refresh();
      },
    };
    holder.replaceChildren(table(columns, data.items, sort, `No ${noun}.`));
    const filtered = data.filtered_count === data.total_count ? '' : ` (of ${fmtInt(data.total_count)})`;
    info.textContent = `${fmtInt(data.filtered_count)} ${noun}${filtered}, page ${data.page} of ${data.page_count}`;
    prev.disabled = data.page <= 1;
    next.disabled = data.page >= data.page_count;
  }

  let debounce;
  filter.addEventListener('input', () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      Object.assign(state, { name: filter.value, page: 1 });
      refresh();
    }, 250);
  });
  pageSize.addEventListener('change', () => {
    Object.assign(state, { pageSize: Number(pageSize.value), page: 1 });
    refresh();
  });
  prev.addEventListener('click', () => { state.page -= 1; refresh(); });
  next.addEventListener('click', () => { state.page += 1; refresh(); });
  poll(refresh);
  root.refresh = refresh;
  return root;
}

// ---------------------------------------------------------------------------------------------
// Forms

/** A form whose submit calls `onSubmit(values)`; fields are nodes (labels with inputs). */
function form(title, fields, submitText, onSubmit, attrs = {}) {
  const node = el('form', { class: 'inline', ...attrs }, fields, el('button', { type: 'submit' }, submitText));
  node.addEventListener('submit', async (event) => {
    event.preventDefault();
    const values = {};
    for (const input of node.elements) {
      if (!input.name) continue;
      values[input.name] = input.type === 'checkbox' ? input.checked : input.value;
    }
    await onSubmit(values, node);
  });
  return el('div', { class: 'card' }, el('h3', {}, title), node);
}

const field = (label, attrs) => el('label', {}, label, el('input', attrs));
const check = (label, name, checked) => el('label', { class: 'check' }, el('input', { type: 'checkbox', name, checked }), label);
const select = (label, name, options, value) => {
  const node = el('select', { name }, options.map((o) => el('option', { value: o }, o)));
  if (value !== undefined) node.value = value;
  return el('label', {}, label, node);
};

let vhostCache = null;
async function vhostNames() {
  vhostCache ??= (await api('GET', '/api/vhosts')).map((v) => v.name);
  return vhostCache;
}

/** A JSON object from a text box ('' is {}). */
function parseArguments(text) {
  if (!text.trim()) return {};
  const value = JSON.parse(text);
  if (typeof value !== 'object' || Array.isArray(value) || value === null) throw new Error('arguments must be a JSON object');
  return value;
}

/** `confirm()` before a destructive action. */
function confirmed(question) {
  return window.confirm(question);
}

const queueLink = (vhost, name) => el('a', { href: `#/queues/${enc(vhost)}/${enc(name)}` }, name);
const exchangeLink = (vhost, name) => el('a', { href: `#/exchanges/${enc(vhost)}/${enc(name || 'amq.default')}` }, name || '(AMQP default)');
const tags = (list) => (list ?? []).map((t) => el('span', { class: 'tag' }, t));
const features = (o) => tags([o.durable && 'durable', o.auto_delete && 'auto-delete', o.exclusive && 'exclusive', o.internal && 'internal'].filter(Boolean));

function stat(label, id) {
  return el('div', { class: 'stat' }, el('div', { class: 'label' }, label), el('div', { class: 'value', id }, '–'));
}

function setText(id, text) {
  const node = document.getElementById(id);
  if (node) node.textContent = text;
}

// ---------------------------------------------------------------------------------------------
// Pages

async function overviewPage(main) {
  const rates = el('div', { class: 'plot', id: 'plot-rates' });
  const queued = el('div', { class: 'plot', id: 'plot-queued' });
  main.append(
    el('h1', {}, 'Overview'),
    el('div', { class: 'stats' },
      stat('Publish', 'rate-publish'), stat('Deliver', 'rate-deliver'), stat('Ack', 'rate-ack'), stat('Confirm', 'rate-confirm'),
      stat('Ready', 'total-ready'), stat('Unacked', 'total-unacked')),
    el('div', { class: 'grid' }, el('div', { class: 'card' }, rates), el('div', { class: 'card' }, queued)),
    el('h2', {}, 'Totals'),
    el('div', { class: 'stats' },
      stat('Connections', 'count-connections'), stat('Channels', 'count-channels'), stat('Exchanges', 'count-exchanges'),
      stat('Queues', 'count-queues'), stat('Consumers', 'count-consumers')),
    el('p', { class: 'muted', id: 'node-info' }),
  );
  const pushRates = timePlot(rates, 'Message rates', ['publish', 'deliver', 'ack', 'confirm'], fmtRate);
  const pushQueued = timePlot(queued, 'Queued messages', ['ready', 'unacked'], fmtInt);
  poll(async () => {
    const o = await api('GET', '/api/overview');
    const s = o.message_stats ?? {};
    const r = ['publish', 'deliver_get', 'ack', 'confirm'].map((k) => rateOf(s, k));
    ['publish', 'deliver', 'ack', 'confirm'].forEach((k, i) => setText(`rate-${k}`, fmtRate(r[i])));
    pushRates(r);
    const q = o.queue_totals ?? {};
    setText('total-ready', fmtInt(q.messages_ready ?? 0));
    setText('total-unacked', fmtInt(q.messages_unacknowledged ?? 0));
    pushQueued([q.messages_ready ?? 0, q.messages_unacknowledged ?? 0]);
    for (const [k, v] of Object.entries(o.object_totals ?? {})) setText(`count-${k}`, fmtInt(v));
    setText('node-info', `${o.product_name} ${o.product_version} on ${o.node} (RabbitMQ management API ${o.management_version})`);
  });
}

async function queuesPage(main) {
  const vhosts = await vhostNames();
  const list = listing({
    endpoint: '/api/queues',
    noun: 'queues',
    id: 'queues-table',
    columns: [
      { title: 'Virtual host', key: 'vhost', cell: (q) => q.vhost },
      { title: 'Name', key: 'name', cell: (q) => queueLink(q.vhost, q.name) },
      { title: 'Features', cell: features },
      { title: 'State', key: 'state', cell: (q) => q.state },
      { title: 'Ready', key: 'messages_ready', num: true, cell: (q) => fmtInt(q.messages_ready) },
      { title: 'Unacked', key: 'messages_unacknowledged', num: true, cell: (q) => fmtInt(q.messages_unacknowledged) },
      { title: 'Messages', key: 'messages', num: true, cell: (q) => fmtInt(q.messages) },
      { title: 'Consumers', key: 'consumers', num: true, cell: (q) => fmtInt(q.consumers) },
      { title: 'Publish', key: 'message_stats.publish_details.rate', num: true, cell: (q) => fmtRate(rateOf(q.message_stats, 'publish')) },
      { title: 'Deliver', key: 'message_stats.deliver_get_details.rate', num: true, cell: (q) => fmtRate(rateOf(q.message_stats, 'deliver_get')) },
    ],
  });
  main.append(
    el('h1', {}, 'Queues'),
    list,
    form('Declare a queue', [
      select('Virtual host', 'vhost', vhosts, '/'),
      field('Name', { name: 'name', required: true }),
      check('Durable', 'durable', true),
      check('Auto-delete', 'auto_delete', false),
      el('label', {}, 'Arguments (JSON)', el('input', { name: 'arguments', placeholder: '{"x-max-length": 1000}' })),
    ], 'Declare', async (v, node) => {
      const done = await act(() => api('PUT', `/api/queues/${enc(v.vhost)}/${enc(v.name)}`, {
        durable: v.durable, auto_delete: v.auto_delete, arguments: parseArguments(v.arguments),
      }), `Queue ${v.name} declared`);
      if (done !== undefined) {
        node.reset();
        list.refresh();
      }
    }, { id: 'declare-queue' }),
  );
}

async function queuePage(main, vhost, name) {
  const path = `/api/queues/${enc(vhost)}/${enc(name)}`;
  const depth = el('div', { class: 'plot', id: 'plot-depth' });
  const info = el('dl', { class: 'props' });
  const consumers = el('div', { id: 'consumers' });
  const bindings = el('div', { id: 'bindings' });
  const got = el('div', { id: 'got-messages' });
  main.append(
    el('div', { class: 'breadcrumb' }, el('a', { href: '#/queues' }, 'Queues'), ` / ${vhost}`),
    el('h1', {}, `Queue ${name}`),
    el('div', { class: 'stats' },
      stat('Ready', 'q-ready'), stat('Unacked', 'q-unacked'), stat('Total', 'q-total'), stat('Consumers', 'q-consumers'),
      stat('Publish', 'q-publish'), stat('Deliver', 'q-deliver')),
    el('div', { class: 'grid' }, el('div', { class: 'card' }, depth), el('div', { class: 'card' }, el('h3', {}, 'Details'), info)),
    el('h2', {}, 'Consumers'), consumers,
    el('h2', {}, 'Bindings'), bindings,
    el('h2', {}, 'Actions'),
    el('div', { class: 'grid' },
      form('Publish a message', [
        el('label', {}, 'Payload', el('textarea', { name: 'payload', required: true })),
        select('Delivery mode', 'delivery_mode', ['1 (transient)', '2 (persistent)'], '2 (persistent)'),
      ], 'Publish', async (v) => {
        const result = await act(() => api('POST', `/api/exchanges/${enc(vhost)}/amq.default/publish`, {
          routing_key: name,
          payload: v.payload,
          payload_encoding: 'string',
          properties: { delivery_mode: Number(v.delivery_mode[0]) },
        }), (r) => (r.routed ? 'Message published' : 'Message published but not routed'));
        if (result) refresh();
      }, { id: 'publish-message' }),
      el('div', {},
        form('Get messages', [
          field('Messages', { name: 'count', type: 'number', min: 1, max: 100, value: '1' }),
          select('Ack mode', 'ackmode', ['ack_requeue_true', 'ack_requeue_false', 'reject_requeue_true', 'reject_requeue_false'], 'ack_requeue_true'),
        ], 'Get', async (v) => {
          const messages = await act(() => api('POST', `${path}/get`, {
            count: Number(v.count), ackmode: v.ackmode, encoding: 'auto', truncate: 50000,
          }));
          if (messages === undefined) return;
          got.replaceChildren(...(messages.length === 0
            ? [el('p', { class: 'muted' }, 'The queue is empty.')]
            : messages.map((m, i) => el('div', { class: 'message' },
              el('strong', {}, `Message ${i + 1}`),
              el('span', { class: 'muted' }, ` exchange ${m.exchange || '(AMQP default)'}, routing key ${m.routing_key}${m.redelivered ? ', redelivered' : ''}, ${fmtInt(m.payload_bytes)} bytes (${m.payload_encoding}), ${fmtInt(m.message_count)} left`),
              Object.keys(m.properties ?? {}).length ? el('div', { class: 'mono muted' }, JSON.stringify(m.properties)) : null,
              el('pre', { class: 'payload' }, m.payload)))));
          refresh();
        }, { id: 'get-messages' }),
        got),
      el('div', { class: 'card' }, el('h3', {}, 'Purge or delete'),
        el('div', { class: 'toolbar' },
          el('button', {
            type: 'button', class: 'danger', id: 'purge',
            onclick: async () => {
              if (!confirmed(`Purge every ready message of ${name}?`)) return;
              await act(() => api('DELETE', `${path}/contents`), 'Queue purged');
              refresh();
            },
          }, 'Purge'),
          el('button', {
            type: 'button', class: 'danger', id: 'delete',
            onclick: async () => {
              if (!confirmed(`Delete the queue ${name}?`)) return;
              const done = await act(() => api('DELETE', path), `Queue ${name} deleted`);
              if (done !== undefined) location.hash = '#/queues';
            },
          }, 'Delete'))),
    ),
  );
  const pushDepth = timePlot(depth, 'Queue depth', ['ready', 'unacked'], fmtInt);

  async function refresh() {
    let q;
    try {
      q = await api('GET', path);
    } catch (e) {
      if (e.status === 404) {
        main.replaceChildren(el('h1', {}, 'Queue not found'), el('p', {}, `There is no queue ${name} in ${vhost}. `, el('a', { href: '#/queues' }, 'All queues')));
        leavePage();
        return;
      }
      throw e;
    }
    setText('q-ready', fmtInt(q.messages_ready));
    setText('q-unacked', fmtInt(q.messages_unacknowledged));
    setText('q-total', fmtInt(q.messages));
    setText('q-consumers', fmtInt(q.consumers));
    setText('q-publish', fmtRate(rateOf(q.message_stats, 'publish')));
    setText('q-deliver', fmtRate(rateOf(q.message_stats, 'deliver_get')));
    pushDepth([q.messages_ready, q.messages_unacknowledged]);
    info.replaceChildren(
      el('dt', {}, 'Virtual host'), el('dd', {}, q.vhost),
      el('dt', {}, 'Type'), el('dd', {}, q.type),
      el('dt', {}, 'State'), el('dd', {}, q.state),
      el('dt', {}, 'Features'), el('dd', {}, features(q)),
      el('dt', {}, 'Arguments'), el('dd', { class: 'mono' }, JSON.stringify(q.arguments ?? {})),
      el('dt', {}, 'Bytes ready'), el('dd', {}, fmtInt(q.message_bytes_ready)),
      el('dt', {}, 'Idle since'), el('dd', {}, q.idle_since ?? '–'),
    );
    consumers.replaceChildren(table([
      { title: 'Consumer tag', cell: (c) => c.consumer_tag },
      { title: 'Channel', cell: (c) => c.channel_details?.name ?? '' },
      { title: 'Ack required', cell: (c) => (c.ack_required ? 'yes' : 'no') },
      { title: 'Exclusive', cell: (c) => (c.exclusive ? 'yes' : 'no') },
      { title: 'Prefetch', num: true, cell: (c) => fmtInt(c.prefetch_count) },
      { title: 'Active', cell: (c) => (c.active ? 'yes' : 'no') },
    ], q.consumer_details ?? [], null, 'No consumers.'));
    const list = await api('GET', `${path}/bindings`);
    bindings.replaceChildren(bindingTable(list, 'source'));
  }
  poll(refresh);
}

/** Bindings, showing the other end (`source` or `destination`), each with an Unbind button. */
function bindingTable(list, end) {
  return table([
    end === 'source'
      ? { title: 'From exchange', cell: (b) => exchangeLink(b.vhost, b.source) }
      : { title: 'To', cell: (b) => (b.destination_type === 'queue' ? queueLink(b.vhost, b.destination) : exchangeLink(b.vhost, b.destination)) },
    ...(end === 'source' ? [] : [{ title: 'Type', cell: (b) => b.destination_type }]),
    { title: 'Routing key', cell: (b) => b.routing_key },
    { title: 'Arguments', cell: (b) => el('span', { class: 'mono' }, JSON.stringify(b.arguments ?? {})) },
    {
      title: '',
      cell: (b) => (b.source === ''
        ? el('span', { class: 'muted' }, 'default binding')
        : el('button', {
          type: 'button', class: 'danger small',
          onclick: async (event) => {
            const kind = b.destination_type === 'queue' ? 'q' : 'e';
            const done = await act(() => api('DELETE', `/api/bindings/${enc(b.vhost)}/e/${enc(b.source)}/${kind}/${enc(b.destination)}/${enc(b.properties_key)}`), 'Binding removed');
            if (done !== undefined) event.target.closest('tr').remove();
          },
        }, 'Unbind')),
    },
  ], list, null, 'No bindings.');
}

async function exchangesPage(main) {
  const vhosts = await vhostNames();
  const list = listing({
    endpoint: '/api/exchanges',
    noun: 'exchanges',
    id: 'exchanges-table',
    columns: [
      { title: 'Virtual host', key: 'vhost', cell: (x) => x.vhost },
      { title: 'Name', key: 'name', cell: (x) => exchangeLink(x.vhost, x.name) },
      { title: 'Type', key: 'type', cell: (x) => x.type },
      { title: 'Features', cell: features },
      {
        title: '',
        cell: (x) => (x.name === '' || x.name.startsWith('amq.')
          ? ''
          : el('button', {
            type: 'button', class: 'danger small',
            onclick: async () => {
              if (!confirmed(`Delete the exchange ${x.name}?`)) return;
              await act(() => api('DELETE', `/api/exchanges/${enc(x.vhost)}/${enc(x.name)}`), `Exchange ${x.name} deleted`);
              list.refresh();
            },
          }, 'Delete')),
      },
    ],
  });
  main.append(
    el('h1', {}, 'Exchanges'),
    list,
    form('Declare an exchange', [
      select('Virtual host', 'vhost', vhosts, '/'),
      field('Name', { name: 'name', required: true }),
      select('Type', 'type', ['direct', 'fanout', 'topic', 'headers'], 'direct'),
      check('Durable', 'durable', true),
      check('Auto-delete', 'auto_delete', false),
      check('Internal', 'internal', false),
    ], 'Declare', async (v, node) => {
      const done = await act(() => api('PUT', `/api/exchanges/${enc(v.vhost)}/${enc(v.name)}`, {
        type: v.type, durable: v.durable, auto_delete: v.auto_delete, internal: v.internal, arguments: {},
      }), `Exchange ${v.name} declared`);
      if (done !== undefined) {
        node.reset();
        list.refresh();
      }
    }, { id: 'declare-exchange' }),
  );
}

async function exchangePage(main, vhost, name) {
  const path = `/api/exchanges/${enc(vhost)}/${enc(name)}`;
  const x = await api('GET', path);
  const shown = x.name || '(AMQP default)';
  const bindings = el('div', { id: 'bindings' });
  main.append(
    el('div', { class: 'breadcrumb' }, el('a', { href: '#/exchanges' }, 'Exchanges'), ` / ${vhost}`),
    el('h1', {}, `Exchange ${shown}`),
    el('div', { class: 'card' }, el('dl', { class: 'props' },
      el('dt', {}, 'Type'), el('dd', {}, x.type),
      el('dt', {}, 'Features'), el('dd', {}, features(x)),
      el('dt', {}, 'Arguments'), el('dd', { class: 'mono' }, JSON.stringify(x.arguments ?? {})))),
    el('h2', {}, 'Bindings from this exchange'), bindings,
    el('div', { class: 'grid' },
      x.name === '' ? null : form('Add a binding', [
        select('To', 'kind', ['queue', 'exchange'], 'queue'),
        field('Destination', { name: 'destination', required: true }),
        field('Routing key', { name: 'routing_key' }),
        el('label', {}, 'Arguments (JSON)', el('input', { name: 'arguments', placeholder: '{}' })),
      ], 'Bind', async (v, node) => {
        const kind = v.kind === 'queue' ? 'q' : 'e';
        const done = await act(() => api('POST', `/api/bindings/${enc(vhost)}/e/${enc(name)}/${kind}/${enc(v.destination)}`, {
          routing_key: v.routing_key, arguments: parseArguments(v.arguments),
        }), 'Binding added');
        if (done !== undefined) {
          node.reset();
          refresh();
        }
      }, { id: 'add-binding' }),
      form('Publish a message', [
        field('Routing key', { name: 'routing_key' }),
        el('label', {}, 'Payload', el('textarea', { name: 'payload' })),
      ], 'Publish', async (v) => {
        await act(() => api('POST', `${path}/publish`, {
          routing_key: v.routing_key, payload: v.payload, payload_encoding: 'string', properties: {},
        }), (r) => (r.routed ? 'Message published' : 'Message published but not routed'));
      }, { id: 'publish-message' }),
    ),
  );
  async function refresh() {
    bindings.replaceChildren(bindingTable(await api('GET', `${path}/bindings/source`), 'destination'));
  }
  poll(refresh);
}

async function connectionsPage(main) {
  const list = listing({
    endpoint: '/api/connections',
    noun: 'connections',
    id: 'connections-table',
    columns: [
      { title: 'Name', key: 'name', cell: (c) => el('span', {}, c.name, c.user_provided_name ? el('div', { class: 'muted' }, c.user_provided_name) : null) },
      { title: 'User', key: 'user', cell: (c) => c.user },
      { title: 'Virtual host', key: 'vhost', cell: (c) => c.vhost },
      { title: 'Client', cell: (c) => [c.client_properties?.product, c.client_properties?.version].filter(Boolean).join(' ') },
      { title: 'TLS', cell: (c) => (c.ssl ? 'yes' : 'no') },
      { title: 'Channels', key: 'channels', num: true, cell: (c) => fmtInt(c.channels) },
      { title: 'Published', key: 'message_stats.publish', num: true, cell: (c) => fmtInt(c.message_stats?.publish) },
      { title: 'Delivered', key: 'message_stats.deliver_get', num: true, cell: (c) => fmtInt(c.message_stats?.deliver_get) },
      { title: 'Connected since', key: 'connected_at', cell: (c) => new Date(c.connected_at).toLocaleString() },
      {
        title: '',
        cell: (c) => el('button', {
          type: 'button', class: 'danger small close-connection', 'data-name': c.name,
          onclick: async () => {
            if (!confirmed(`Close the connection ${c.name}?`)) return;
            const reason = { 'X-Reason': `Closed from the dashboard by ${auth.user}` };
            await act(() => api('DELETE', `/api/connections/${enc(c.name)}`, undefined, reason), 'Connection closed');
            list.refresh();
          },
        }, 'Close'),
      },
    ],
  });
  main.append(el('h1', {}, 'Connections'), list);
}

async function channelsPage(main) {
  main.append(el('h1', {}, 'Channels'), listing({
    endpoint: '/api/channels',
    noun: 'channels',
    id: 'channels-table',
    columns: [
      { title: 'Channel', key: 'name', cell: (c) => c.name },
      { title: 'User', key: 'user', cell: (c) => c.user },
      { title: 'Virtual host', key: 'vhost', cell: (c) => c.vhost },
      { title: 'Mode', cell: (c) => [c.confirm && 'confirm', c.transactional && 'transactional'].filter(Boolean).join(', ') },
      { title: 'Prefetch', key: 'prefetch_count', num: true, cell: (c) => fmtInt(c.prefetch_count) },
      { title: 'Consumers', key: 'consumer_count', num: true, cell: (c) => fmtInt(c.consumer_count) },
      { title: 'Unacked', key: 'messages_unacknowledged', num: true, cell: (c) => fmtInt(c.messages_unacknowledged) },
    ],
  }));
}

async function usersPage(main) {
  const users = el('div', { id: 'users-table' });
  const permissions = el('div', { id: 'permissions-table' });
  const vhosts = await vhostNames();
  const userSelect = el('select', { name: 'user' });
  async function refresh() {
    const [userList, permissionList] = await Promise.all([api('GET', '/api/users'), api('GET', '/api/permissions')]);
    users.replaceChildren(table([
      { title: 'Name', cell: (u) => u.name },
      { title: 'Tags', cell: (u) => tags(u.tags) },
      {
        title: '',
        cell: (u) => (u.name === auth.user ? el('span', { class: 'muted' }, 'you') : el('button', {
          type: 'button', class: 'danger small',
          onclick: async () => {
            if (!confirmed(`Delete the user ${u.name}?`)) return;
            await act(() => api('DELETE', `/api/users/${enc(u.name)}`), `User ${u.name} deleted`);
            refresh();
          },
        }, 'Delete')),
      },
    ], userList, null, 'No users.'));
    permissions.replaceChildren(table([
      { title: 'User', cell: (p) => p.user },
      { title: 'Virtual host', cell: (p) => p.vhost },
      { title: 'Configure', cell: (p) => el('code', {}, p.configure) },
      { title: 'Write', cell: (p) => el('code', {}, p.write) },
      { title: 'Read', cell: (p) => el('code', {}, p.read) },
      {
        title: '',
        cell: (p) => el('button', {
          type: 'button', class: 'danger small',
          onclick: async () => {
            await act(() => api('DELETE', `/api/permissions/${enc(p.vhost)}/${enc(p.user)}`), 'Permissions cleared');
            refresh();
          },
        }, 'Clear'),
      },
    ], permissionList, null, 'No permissions.'));
    const chosen = userSelect.value;
    userSelect.replaceChildren(...userList.map((u) => el('option', { value: u.name }, u.name)));
    if (userList.some((u) => u.name === chosen)) userSelect.value = chosen;
  }
  main.append(
    el('h1', {}, 'Users'), users,
    form('Add a user', [
      field('Name', { name: 'name', required: true, autocomplete: 'off' }),
      field('Password', { name: 'password', type: 'password', required: true, autocomplete: 'new-password' }),
      select('Tags', 'tags', ['', 'management', 'monitoring', 'policymaker', 'administrator'], ''),
    ], 'Add user', async (v, node) => {
      const done = await act(() => api('PUT', `/api/users/${enc(v.name)}`, { password: v.password, tags: v.tags }), `User ${v.name} added`);
      if (done !== undefined) {
        node.reset();
        await refresh();
        userSelect.value = v.name;
      }
    }, { id: 'add-user' }),
    el('h2', {}, 'Permissions'), permissions,
    form('Set permissions', [
      el('label', {}, 'User', userSelect),
      select('Virtual host', 'vhost', vhosts, '/'),
      field('Configure', { name: 'configure', value: '.*' }),
      field('Write', { name: 'write', value: '.*' }),
      field('Read', { name: 'read', value: '.*' }),
    ], 'Set permissions', async (v) => {
      await act(() => api('PUT', `/api/permissions/${enc(v.vhost)}/${enc(v.user)}`, {
        configure: v.configure, write: v.write, read: v.read,
      }), `Permissions of ${v.user} in ${v.vhost} set`);
      refresh();
    }, { id: 'set-permissions' }),
  );
  poll(refresh);
}

// ---------------------------------------------------------------------------------------------
// Routing and login

const routes = [
  [/^$/, 'overview', overviewPage],
  [/^queues$/, 'queues', queuesPage],
  [/^queues\/([^/]+)\/([^/]+)$/, 'queues', queuePage],
  [/^exchanges$/, 'exchanges', exchangesPage],
  [/^exchanges\/([^/]+)\/([^/]+)$/, 'exchanges', exchangePage],
  [/^connections$/, 'connections', connectionsPage],
  [/^channels$/, 'channels', channelsPage],
  [/^users$/, 'users', usersPage],
];

async function route() {
  leavePage();
  const main = $('#main');
  main.replaceChildren();
  if (!auth.header) {
    showLogin();
    return;
  }
  $('#login').hidden = true;
  $('#bar').hidden = false;
  main.hidden = false;
  const hash = location.hash.replace(/^#\/?/, '');
  for (const [pattern, name, render] of routes) {
    const match = hash.match(pattern);
    if (!match) continue;
    for (const link of document.querySelectorAll('#nav a')) link.classList.toggle('active', link.dataset.page === name);
    main.dataset.page = name;
    try {
      await render(main, ...match.slice(1).map(decodeURIComponent));
    } catch (e) {
      if (e.status !== 401) main.append(el('p', { class: 'error' }, `Could not load this page: ${e.message}`));
    }
    return;
  }
  main.append(el('h1', {}, 'Not found'), el('p', {}, el('a', { href: '#/' }, 'Back to the overview')));
}

function showLogin(message = '') {
  leavePage();
  $('#bar').hidden = true;
  $('#main').hidden = true;
  $('#main').replaceChildren();
  $('#login').hidden = false;
  $('#login-error').textContent = message;
  $('#login-form [name=user]').focus();
}

$('#login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const formNode = event.target;
  const user = formNode.user.value;
  auth.set(user, formNode.password.value);
  try {
    const me = await api('GET', '/api/whoami');
    formNode.password.value = '';
    $('#who').textContent = `${me.name}`;
    vhostCache = null;
    route();
  } catch (e) {
    $('#login-error').textContent = e.status === 401 ? 'Wrong user or password, or not a management user.' : `Login failed: ${e.message}`;
  }
});

$('#logout').addEventListener('click', () => {
  auth.clear();
  showLogin();
});

window.addEventListener('hashchange', route);
$('#who').textContent = auth.user ?? '';
route();
