// /docs: copy buttons on code blocks, and the table of contents open on wide screens.
'use strict';

(function () {
  const status = document.getElementById('copy-status');

  function announce(text) {
    if (status) status.textContent = text;
  }

  async function copy(button, code) {
    const text = code.textContent;
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = 'Copied';
      announce('Code copied to the clipboard');
    } catch (err) {
      button.textContent = 'Copy failed';
      announce('Copying failed: ' + err.message);
    }
    setTimeout(() => {
      button.textContent = 'Copy';
    }, 2000);
  }

  for (const block of document.querySelectorAll('.code')) {
    const code = block.querySelector('pre code');
    if (!code) continue;
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'copy';
    button.textContent = 'Copy';
    button.setAttribute('aria-label', 'Copy code to the clipboard');
    button.addEventListener('click', () => copy(button, code));
    block.appendChild(button);
  }

  const toc = document.querySelector('.toc details');
  if (toc && window.matchMedia('(min-width: 64rem)').matches) toc.open = true;
})();
