// Renders /openapi.json as a page: operations by tag, then the schemas. Plain DOM, no library;
// every text goes through textContent.
"use strict";

const el = (tag, attrs = {}, ...kids) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const kid of kids) if (kid != null) node.append(kid);
  return node;
};

// A line with its `code` spans.
const inline = (text) => {
  const span = el("span");
  String(text || "").split(/(`[^`]*`)/).forEach((part, i) => {
    span.append(i % 2 ? el("code", {}, part.slice(1, -1)) : part);
  });
  return span;
};

// Blank-line paragraphs of the descriptions.
const prose = (text) => {
  const box = el("div", { class: "prose" });
  for (const para of String(text || "").split(/\n\s*\n/)) {
    if (para.trim()) box.append(el("p", {}, inline(para)));
  }
  return box;
};

const refName = (ref) => ref.split("/").pop();

// A one-line type: `Image`, `string (date-time)`, `"init" | "done"`, `array of Image`...
const typeOf = (s) => {
  if (!s) return el("span", {}, "any");
  if (s.$ref) return el("a", { href: "#schema-" + refName(s.$ref) }, refName(s.$ref));
  const span = el("span");
  if (s.oneOf || s.anyOf) {
    (s.oneOf || s.anyOf).forEach((alt, i) => { if (i) span.append(" or "); span.append(typeOf(alt)); });
    return span;
  }
  if (s.enum) return el("span", {}, s.enum.map((v) => JSON.stringify(v)).join(" | "));
  const types = [].concat(s.type || "any");
  types.forEach((t, i) => {
    if (i) span.append(" or ");
    if (t === "array") { span.append("array of "); span.append(typeOf(s.items)); }
    else if (t === "object" && s.additionalProperties && typeof s.additionalProperties === "object") {
      span.append("map of "); span.append(typeOf(s.additionalProperties));
    } else span.append(t);
  });
  if (s.format) span.append(` (${s.format})`);
  if (s.pattern) span.append(el("code", { class: "pattern" }, " " + s.pattern));
  return span;
};

const fieldTable = (schema) => {
  const props = Object.entries(schema.properties || {});
  if (!props.length) return el("p", {}, typeOf(schema));
  const required = new Set(schema.required || []);
  const table = el("table", {}, el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Field"),
    el("th", { scope: "col" }, "Type"), el("th", { scope: "col" }, "Description"))));
  const body = el("tbody");
  for (const [name, s] of props) {
    body.append(el("tr", {}, el("td", {}, el("code", {}, name), required.has(name) ? "" : el("small", {}, " optional")),
      el("td", {}, typeOf(s)), el("td", {}, prose(s.description))));
  }
  table.append(body);
  return table;
};

const bodyOf = (content) => {
  const list = el("ul", { class: "content" });
  for (const [type, media] of Object.entries(content || {})) {
    list.append(el("li", {}, el("code", {}, type), ": ", typeOf(media.schema)));
  }
  return list;
};

const operation = (method, path, op) => {
  const id = "op-" + (op.operationId || method + path);
  const box = el("section", { class: "panel op", id, "aria-labelledby": id + "-h" });
  box.append(el("h3", { id: id + "-h" }, el("span", { class: "method method-" + method }, method.toUpperCase()), " ",
    el("code", {}, path), op.summary ? " · " : "", op.summary ? inline(op.summary) : null));
  if (op.description) box.append(prose(op.description));
  if (op.security && op.security.some((s) => Object.keys(s).length)) {
    const optional = op.security.some((s) => !Object.keys(s).length);
    box.append(el("p", { class: "auth" }, optional ? "Token: when the deployment requires one." : "Token: required."));
  }
  if (op.parameters && op.parameters.length) {
    box.append(el("h4", {}, "Parameters"));
    const table = el("table", {}, el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Name"),
      el("th", { scope: "col" }, "In"), el("th", { scope: "col" }, "Type"), el("th", { scope: "col" }, "Description"))));
    const body = el("tbody");
    for (const p of op.parameters) {
      body.append(el("tr", {}, el("td", {}, el("code", {}, p.name), p.required ? "" : el("small", {}, " optional")),
        el("td", {}, p.in), el("td", {}, typeOf(p.schema)), el("td", {}, prose(p.description))));
    }
    table.append(body);
    box.append(table);
  }
  if (op.requestBody) {
    box.append(el("h4", {}, "Request body"), bodyOf(op.requestBody.content));
  }
  box.append(el("h4", {}, "Responses"));
  const responses = el("dl", { class: "responses" });
  for (const [status, r] of Object.entries(op.responses || {})) {
    responses.append(el("dt", {}, el("code", {}, status)), el("dd", {}, inline(r.description), r.content ? bodyOf(r.content) : null));
  }
  box.append(responses);
  return box;
};

const render = (doc) => {
  const main = document.getElementById("doc");
  main.replaceChildren();
  document.getElementById("title").textContent = `${doc.info.title} ${doc.info.version}`;
  main.append(el("section", { class: "panel" }, prose(doc.info.description),
    el("p", {}, "OpenAPI ", doc.openapi, doc.servers ? ` · server ${doc.servers.map((s) => s.url).join(", ")}` : "")));
  const byTag = new Map((doc.tags || []).map((t) => [t.name, { tag: t, ops: [] }]));
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of ["get", "post", "put", "patch", "delete"]) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(tag)) byTag.set(tag, { tag: { name: tag }, ops: [] });
      byTag.get(tag).ops.push([method, path, op]);
    }
  }
  const nav = el("nav", { class: "panel", "aria-label": "Contents" }, el("h2", {}, "Contents"));
  const navList = el("ul");
  nav.append(navList);
  main.append(nav);
  for (const { tag, ops } of byTag.values()) {
    if (!ops.length) continue;
    const id = "tag-" + tag.name;
    navList.append(el("li", {}, el("a", { href: "#" + id }, tag.name)));
    main.append(el("h2", { id }, tag.name), tag.description ? prose(tag.description) : null);
    for (const [method, path, op] of ops) main.append(operation(method, path, op));
  }
  const schemas = Object.entries((doc.components && doc.components.schemas) || {});
  navList.append(el("li", {}, el("a", { href: "#schemas" }, "schemas")));
  main.append(el("h2", { id: "schemas" }, "Schemas"));
  for (const [name, s] of schemas) {
    main.append(el("section", { class: "panel", id: "schema-" + name }, el("h3", {}, name),
      s.description ? prose(s.description) : null, fieldTable(s)));
  }
  main.setAttribute("aria-busy", "false");
  if (location.hash) document.getElementById(location.hash.slice(1))?.scrollIntoView();
};

fetch("/openapi.json")
  .then((r) => { if (!r.ok) throw new Error(`HTTP ${r.status}`); return r.json(); })
  .then(render)
  .catch((e) => { document.getElementById("loading").textContent = `Could not load /openapi.json: ${e.message}`; });
