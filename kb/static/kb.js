/* kb.js: suggest-as-you-type for the search box, the "/" and Ctrl/Cmd-K shortcut to reach it, and the
 * Filter control opened on wide screens, all as progressive enhancement.
 *
 * Implements the ARIA 1.2 combobox pattern (list autocomplete, manual selection):
 * the input gets role="combobox", aria-expanded, aria-controls and
 * aria-activedescendant; suggestions are role="option" items of the
 * role="listbox" #q-suggestions; a polite live region announces how many there
 * are. ArrowDown/ArrowUp move, Enter picks, Escape closes. Without JavaScript
 * the plain GET form works unchanged. No framework, no CDN (CSP: script-src 'self').
 */
(function () {
  "use strict";

  var DEBOUNCE_MS = 150;
  var MIN_CHARS = 2;
  var LIMIT = 8;

  function setup(input) {
    var list = document.getElementById(input.getAttribute("aria-controls") || "q-suggestions");
    var status = document.getElementById("q-status");
    var endpoint = input.getAttribute("data-suggest-url");
    if (!list || !endpoint || !window.fetch || !window.JSON) {
      return;
    }
    var form = input.form;
    var items = [];
    var active = -1;
    var timer = null;
    var controller = null;
    var sequence = 0;
    var lastQuery = "";

    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-expanded", "false");
    input.setAttribute("aria-controls", list.id);
    input.setAttribute("autocomplete", "off");

    function announce(text) {
      if (status && status.textContent !== text) {
        status.textContent = text;
      }
    }

    function optionId(index) {
      return list.id + "-option-" + index;
    }

    function setActive(index) {
      var previous = active >= 0 ? document.getElementById(optionId(active)) : null;
      if (previous) {
        previous.setAttribute("aria-selected", "false");
      }
      active = index;
      if (index < 0 || index >= items.length) {
        active = -1;
        input.removeAttribute("aria-activedescendant");
        return;
      }
      var option = document.getElementById(optionId(index));
      option.setAttribute("aria-selected", "true");
      input.setAttribute("aria-activedescendant", option.id);
      if (option.scrollIntoView) {
        option.scrollIntoView({ block: "nearest" });
      }
    }

    function isOpen() {
      return !list.hidden;
    }

    function open() {
      if (!items.length) {
        return;
      }
      list.hidden = false;
      input.setAttribute("aria-expanded", "true");
    }

    function close() {
      setActive(-1);
      list.hidden = true;
      input.setAttribute("aria-expanded", "false");
    }

    function render(suggestions) {
      items = suggestions.slice(0, LIMIT);
      active = -1;
      input.removeAttribute("aria-activedescendant");
      while (list.firstChild) {
        list.removeChild(list.firstChild);
      }
      items.forEach(function (text, index) {
        var option = document.createElement("li");
        option.id = optionId(index);
        option.setAttribute("role", "option");
        option.setAttribute("aria-selected", "false");
        option.setAttribute("data-index", String(index));
        option.textContent = text;
        list.appendChild(option);
      });
      if (items.length) {
        open();
        announce(items.length + (items.length === 1 ? " suggestion" : " suggestions") +
          " available. Use the up and down arrow keys to choose, Enter to search.");
      } else {
        close();
        announce("");
      }
    }

    function submit() {
      if (form.requestSubmit) {
        form.requestSubmit();
      } else {
        form.submit();
      }
    }

    function choose(index) {
      if (index < 0 || index >= items.length) {
        return;
      }
      input.value = items[index];
      close();
      submit();
    }

    function fetchSuggestions() {
      var query = input.value.replace(/\s+/g, " ").trim();
      if (query.length < MIN_CHARS) {
        lastQuery = "";
        render([]);
        return;
      }
      if (query === lastQuery) {
        open();
        return;
      }
      lastQuery = query;
      if (controller) {
        controller.abort();
      }
      controller = window.AbortController ? new AbortController() : null;
      var mine = ++sequence;
      var url = endpoint + "?q=" + encodeURIComponent(query) + "&limit=" + LIMIT;
      window.fetch(url, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        signal: controller ? controller.signal : undefined
      }).then(function (response) {
        if (!response.ok) {
          throw new Error("suggest " + response.status);
        }
        return response.json();
      }).then(function (data) {
        if (mine === sequence && document.activeElement === input) {
          render(Array.isArray(data.suggestions) ? data.suggestions : []);
        }
      }).catch(function () {
        if (mine === sequence) {
          lastQuery = "";
          render([]);  /* suggestions are a convenience: fail quietly, the form still works */
        }
      });
    }

    input.addEventListener("input", function () {
      window.clearTimeout(timer);
      timer = window.setTimeout(fetchSuggestions, DEBOUNCE_MS);
    });

    input.addEventListener("keydown", function (event) {
      if (event.altKey || event.ctrlKey || event.metaKey) {
        return;
      }
      switch (event.key) {
        case "ArrowDown":
        case "Down":
          event.preventDefault();
          if (!isOpen()) {
            if (items.length) {
              open();
            } else {
              fetchSuggestions();
            }
          } else {
            setActive(active + 1 >= items.length ? 0 : active + 1);
          }
          break;
        case "ArrowUp":
        case "Up":
          if (isOpen()) {
            event.preventDefault();
            setActive(active <= 0 ? items.length - 1 : active - 1);
          }
          break;
        case "Enter":
          if (isOpen() && active >= 0) {
            event.preventDefault();
            choose(active);
          } else {
            close();
          }
          break;
        case "Escape":
        case "Esc":
          if (isOpen()) {
            event.preventDefault();
            close();
          }
          break;
        case "Tab":
          close();
          break;
        default:
          break;
      }
    });

    /* Keep focus in the input while clicking an option, so blur does not close the list first. */
    list.addEventListener("mousedown", function (event) {
      event.preventDefault();
    });
    list.addEventListener("click", function (event) {
      var target = event.target;
      while (target && target !== list && target.getAttribute("role") !== "option") {
        target = target.parentNode;
      }
      if (target && target !== list) {
        choose(Number(target.getAttribute("data-index")));
      }
    });

    input.addEventListener("blur", function () {
      close();
    });
  }

  /* Keyboard shortcut (the DocSearch habit): "/" or Ctrl-K (Cmd-K on a Mac) focuses the search box from
   * anywhere. "/" never fires while typing in a field, nor with Ctrl, Alt or Meta held (Shift is allowed:
   * some layouts need it for "/"). Both are left alone inside other fields, whose editing keys they are;
   * in the search box itself Ctrl/Cmd-K selects what was typed. aria-keyshortcuts tells screen readers. */
  var SHORTCUTS = "/ Control+K Meta+K";

  function isEditable(element) {
    if (!element || !element.tagName) {
      return false;
    }
    var tag = element.tagName;
    return element.isContentEditable || tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT";
  }

  function shortcutOf(event) {
    if (event.defaultPrevented || event.isComposing) {
      return "";
    }
    if (event.key === "/" && !event.ctrlKey && !event.altKey && !event.metaKey) {
      return "slash";
    }
    if ((event.key === "k" || event.key === "K") && event.ctrlKey !== event.metaKey &&
        !event.altKey && !event.shiftKey) {
      return "k";
    }
    return "";
  }

  function addHint(input) {
    var combo = input.parentNode;
    if (!combo || !combo.classList || !combo.classList.contains("combo")) {
      return;
    }
    var hint = document.createElement("span");
    var key = document.createElement("kbd");
    hint.className = "shortcut-hint";
    hint.setAttribute("aria-hidden", "true");  /* aria-keyshortcuts already says it, once */
    key.textContent = "/";
    hint.appendChild(key);
    combo.appendChild(hint);
    combo.classList.add("combo-shortcut");
    function update() {
      hint.hidden = document.activeElement === input || input.value !== "";
    }
    input.addEventListener("focus", update);
    input.addEventListener("blur", update);
    input.addEventListener("input", update);
    update();
  }

  function setupShortcut(input) {
    input.setAttribute("aria-keyshortcuts", SHORTCUTS);
    addHint(input);
    document.addEventListener("keydown", function (event) {
      var which = shortcutOf(event);
      if (!which) {
        return;
      }
      if (event.target === input) {
        if (which === "k") {
          event.preventDefault();
          input.select();
        }
        return;
      }
      if (isEditable(event.target)) {
        return;
      }
      event.preventDefault();
      input.focus();
      input.select();
    });
  }

  /* The results' Filter control is a <details>, closed in the HTML so phones see the results first. Where
   * its data-open-media query matches (wide screens, where it is a side column) it is opened, and it
   * follows the query when the window is resized or a phone is turned. */
  function setupFilters(details) {
    var query = details.getAttribute("data-open-media");
    if (!query || !window.matchMedia) {
      return;
    }
    var media = window.matchMedia(query);
    function sync() {
      details.open = media.matches;
    }
    sync();
    if (media.addEventListener) {
      media.addEventListener("change", sync);
    } else if (media.addListener) {
      media.addListener(sync);
    }
  }

  var input = document.getElementById("q");
  if (input) {
    setup(input);
    setupShortcut(input);
  }
  var filters = document.getElementById("filters");
  if (filters) {
    setupFilters(filters);
  }
}());
