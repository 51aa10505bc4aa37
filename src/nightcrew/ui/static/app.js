// The dashboard's own script, all of it: a "select all" checkbox for bulk actions.
// Everything else is htmx (vendor/), and every page works without JavaScript.
document.addEventListener("change", function (event) {
  var box = event.target;
  if (!(box instanceof HTMLInputElement) || !box.dataset.selectAll) return;
  var form = box.form;
  if (!form) return;
  form.querySelectorAll('input[type="checkbox"][name="' + box.dataset.selectAll + '"]').forEach(function (other) {
    other.checked = box.checked;
  });
});
