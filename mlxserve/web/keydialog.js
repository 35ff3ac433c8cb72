// The API key dialog: shown when the server answers 401 (it runs with --api-key).

const dialog = document.getElementById("key-dialog");
const form = document.getElementById("key-form");
const input = document.getElementById("api-key");
const reason = document.getElementById("key-reason");
const cancel = document.getElementById("key-cancel");

let pending = null; // one dialog at a time, however many requests are waiting for it

/**
 * Asks for the API key. Resolves to the key typed, or null if the person cancels.
 * `rejected`: the server refused the key the page had, so say that.
 */
export function askApiKey(rejected) {
  if (pending) return pending;
  reason.textContent = rejected
    ? "The server rejected the stored API key. Enter the key it was started with (--api-key)."
    : "This server asks for an API key (its --api-key). It is kept in this browser and sent as a Bearer token.";
  input.value = "";
  pending = new Promise((resolve) => {
    const finish = (key) => {
      form.removeEventListener("submit", onSubmit);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      pending = null;
      resolve(key);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (key) finish(key);
    };
    const onCancel = (event) => {
      event.preventDefault();
      finish(null);
    };
    form.addEventListener("submit", onSubmit);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel); // Escape
    dialog.showModal();
    input.focus();
  });
  return pending;
}
